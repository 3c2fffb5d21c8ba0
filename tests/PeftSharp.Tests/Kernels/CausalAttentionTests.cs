using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Quantization;
using PeftSharp.Tests.Support;
using static PeftSharp.Tests.Kernels.KernelAssert;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

public class CausalAttentionTests
{
    /// <summary>q, k, v as the model hands them over: [B, heads, T, D] transposed views of [B, T, heads, D] tensors.</summary>
    internal static (Tensor Q, Tensor K, Tensor V) Inputs(int b, int heads, int kvHeads, int t, int d)
    {
        var q = randn(b, t, heads, d).transpose(1, 2).requires_grad_(true);
        var k = randn(b, t, kvHeads, d).transpose(1, 2).requires_grad_(true);
        var v = randn(b, t, kvHeads, d).transpose(1, 2).requires_grad_(true);
        return (q, k, v);
    }

    /// <summary>
    /// The model's path in float64: Rope.Apply on q and k (with cos/sin), libtorch's causal SDPA over k/v repeated per
    /// query head, output as [B, T, H, D].
    /// </summary>
    internal static (Tensor O, Tensor Dq, Tensor Dk, Tensor Dv) Reference(Tensor q, Tensor k, Tensor v, Tensor dOut, Tensor? cos, Tensor? sin)
    {
        var q64 = q.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var k64 = k.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var v64 = v.detach().to_type(ScalarType.Float64).requires_grad_(true);
        long rep = q.shape[1] / k.shape[1];
        Tensor qr = q64, kr = k64;
        if (cos is not null)
        {
            qr = Rope.Apply(q64, cos.to_type(ScalarType.Float64), sin!.to_type(ScalarType.Float64));
            kr = Rope.Apply(k64, cos.to_type(ScalarType.Float64), sin.to_type(ScalarType.Float64));
        }
        var o = nn.functional.scaled_dot_product_attention(qr, kr.repeat_interleave(rep, 1), v64.repeat_interleave(rep, 1), null, 0.0, true)
            .transpose(1, 2);
        o.backward([dOut.to_type(ScalarType.Float64)]);
        return (o.detach(), q64.grad!, k64.grad!, v64.grad!);
    }


    /// <summary>cos/sin [B, 1, T, D] as the model builds them, each batch row at its own positions (as left padding gives).</summary>
    internal static (Tensor Cos, Tensor Sin) Rotary(int b, int t, int d, ScalarType dtype = ScalarType.Float32)
    {
        var c = new ModelConfig { Shape = new Memory.ModelConfig { ModelType = "llama", HiddenSize = 2 * d, IntermediateSize = 4 * d, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = d, VocabSize = 32 } };
        var positions = ScalarArgs.Arange(t, ScalarType.Int64, CPU).unsqueeze(0).Plus(ScalarArgs.With(5L, five => ScalarArgs.Arange(b, ScalarType.Int64, CPU).unsqueeze(1).mul(five)));
        return new Rope(c).CosSin(positions, dtype);
    }

    /// <summary>
    /// Whether the kernel takes head_dim <paramref name="d"/> here; on any CPU with AVX2 + FMA (every x64 this project
    /// runs on: AVX-512 or the 8-lane path) it must, so the kernel tests never skip there silently.
    /// </summary>
    internal static bool KernelRuns(long d)
    {
        bool isa = System.Runtime.Intrinsics.X86.Avx512F.IsSupported
            || (System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported);
        Assert.Equal(isa, CausalAttentionKernel.Supports(d));
        return isa;
    }

    [Theory]
    [InlineData(2, 8, 2, 70, 64, false)]     // GQA 8/2, T not a multiple of the 64-row block nor of the 8-row micro-kernel
    [InlineData(2, 8, 2, 70, 64, true)]      // the same with the rotary embedding inside the kernel
    [InlineData(1, 4, 4, 37, 32, true)]
    [InlineData(2, 4, 1, 130, 128, true)]    // two query blocks (the second of 2 rows), one kv head for all
    [InlineData(2, 4, 1, 130, 128, false)]
    [InlineData(3, 2, 2, 1, 64, true)]       // a single position
    [InlineData(1, 2, 1, 64, 96, false)]     // Phi-3's head_dim, T exactly one block
    public void OutputAndGradientsMatchFloat64Sdpa(int b, int heads, int kvHeads, int t, int d, bool rope)
    {
        if (!KernelRuns(d)) return;   // no AVX2 + FMA: Applies is false and the model keeps SDPA (the model test checks that)
        using var scope = NewDisposeScope();
        manual_seed(7);
        var (q, k, v) = Inputs(b, heads, kvHeads, t, d);
        var dOut = randn(b, t, heads, d);
        var (cos, sin) = rope ? Rotary(b, t, d) : (null, null);
        var (before, _) = CausalAttention.Calls;
        var o = CausalAttention.Compute(q, k, v, 1 / Math.Sqrt(d), cos, sin);
        o.backward([dOut]);
        Assert.Equal(before + 1, CausalAttention.Calls.Forward);
        var (ro, rdq, rdk, rdv) = Reference(q, k, v, dOut, cos, sin);
        Near(ro, o, 2e-5);
        Near(rdq, q.grad!, 1e-4);
        Near(rdk, k.grad!, 1e-4);
        Near(rdv, v.grad!, 1e-4);
    }

    [Fact]
    public void SameBitsRunToRun()
    {
        if (!KernelRuns(64)) return;
        using var scope = NewDisposeScope();
        manual_seed(3);
        var (q, k, v) = Inputs(2, 8, 2, 100, 64);
        var dOut = randn(2, 100, 8, 64);
        var (cos, sin) = Rotary(2, 100, 64);
        Tensor[] Run()
        {
            var o = CausalAttention.Compute(q, k, v, 0.125, cos, sin);
            var grads = autograd.grad([o], [q, k, v], [dOut]);
            return [o.detach(), .. grads];
        }
        var first = Run();
        var second = Run();
        for (int i = 0; i < first.Length; i++) Assert.True(first[i].eq(second[i]).all().item<bool>(), $"output {i} differs between runs");
    }

    /// <summary>
    /// The model users train: a GQA Llama with head_dim 32 and LoRA on every projection; loss and every adapter gradient
    /// with the kernel equal SDPA's to fp32 tolerance, and the kernel really ran (forward and backward, once per layer).
    /// </summary>
    [Fact]
    public void LoraLossAndAdapterGradientsMatchTheSdpaPath()
    {
        int runs = KernelRuns(32) ? 2 : 0;   // once per layer; none without AVX2 + FMA
        var dir = RandomModel.Write(RandomModel.LlamaConfig(hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 64));
        using var model = ModelLoader.Load(dir);
        manual_seed(5);
        var adapters = TestLora.Attach(model, zeroB: false);
        using var ids = randint(0, 64, [2, 45]);
        (double Loss, Tensor[] Grads) Step() => LoraStep(model, adapters, ids);
        var (f0, b0) = CausalAttention.Calls;
        var fast = Step();
        var (f1, b1) = CausalAttention.Calls;
        Assert.Equal((f0 + runs, b0 + runs), (f1, b1));
        (double Loss, Tensor[] Grads) sdpa;
        using (CausalAttention.Off()) sdpa = Step();
        Assert.Equal((f1, b1), CausalAttention.Calls);
        Assert.Equal(sdpa.Loss, fast.Loss, 5);
        GradsNear(sdpa.Grads, fast.Grads);
        foreach (var g in fast.Grads.Concat(sdpa.Grads)) g.Dispose();
    }

    /// <summary>
    /// Training's right-padded batch (rows of 45, 30 and 12 real tokens): the kernel takes it without the mask; the loss
    /// over real tokens and the adapter gradients equal the masked SDPA path's, and so do the logits at real positions.
    /// </summary>
    [Fact]
    public void RightPaddedBatchTakesTheKernelWithTheMaskedPathsResults()
    {
        var dir = RandomModel.Write(RandomModel.LlamaConfig(hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 64));
        using var model = ModelLoader.Load(dir);
        manual_seed(9);
        var adapters = TestLora.Attach(model, zeroB: false);
        int[] lengths = [45, 30, 12];
        using var ids = randint(0, 64, [3, 45]);
        using var mask = stack(lengths.Select(n => cat([ones(n, ScalarType.Int64), zeros(45 - n, ScalarType.Int64)])).ToArray());
        using var labels = ScalarArgs.With(-100L, ignored => ids.masked_fill(mask.EqualTo(0), ignored));
        (Tensor Logits, double Loss, Tensor[] Grads) Step()
        {
            using var scope = NewDisposeScope();
            var logits = model.Forward(ids, attentionMask: mask);
            var loss = nn.functional.cross_entropy(logits.view(-1, 64), labels.view(-1), ignore_index: -100);
            loss.backward();
            var grads = TestLora.TakeGrads(adapters);
            return (logits.detach().DetachFromDisposeScope(), loss.item<float>(), grads);
        }
        int runs = KernelRuns(32) ? 2 : 0;
        var (f0, _) = CausalAttention.Calls;
        var fast = Step();
        Assert.Equal(f0 + runs, CausalAttention.Calls.Forward);
        (Tensor Logits, double Loss, Tensor[] Grads) masked;
        using (CausalAttention.Off()) masked = Step();
        Assert.Equal(masked.Loss, fast.Loss, 5);
        for (int row = 0; row < lengths.Length; row++)
            Near(masked.Logits[row].narrow(0, 0, lengths[row]), fast.Logits[row].narrow(0, 0, lengths[row]), 1e-4);
        for (int i = 0; i < fast.Grads.Length; i++)
            Near(masked.Grads[i], fast.Grads[i], 1e-4 * Math.Max(1, masked.Grads[i].abs().max().item<float>()));
        foreach (var g in fast.Grads.Concat(masked.Grads).Append(fast.Logits).Append(masked.Logits)) g.Dispose();
    }

    [Fact]
    public void LeftPaddedBatchKeepsTheMask()
    {
        var dir = RandomModel.Write(RandomModel.LlamaConfig(hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 64));
        using var model = ModelLoader.Load(dir);
        using var ids = randint(0, 64, [2, 20]);
        using var mask = stack([ones(20, ScalarType.Int64), cat([zeros(5, ScalarType.Int64), ones(15, ScalarType.Int64)])]);
        var (f0, _) = CausalAttention.Calls;
        using (no_grad()) model.Forward(ids, attentionMask: mask).Dispose();
        Assert.Equal(f0, CausalAttention.Calls.Forward);
    }

    /// <summary>
    /// Gradient checkpointing recomputes each layer inside backward: the kernel runs there too, to the same bits; also for
    /// a right-padded batch, whose mask the recompute must read as trailing padding as the forward did.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CheckpointedGradientsAreTheSameBits(bool rightPadded)
    {
        var dir = RandomModel.Write(RandomModel.LlamaConfig(hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 64));
        using var model = ModelLoader.Load(dir);
        manual_seed(4);
        var adapters = TestLora.Attach(model, zeroB: false);
        using var ids = randint(0, 64, [2, 40]);
        using var mask = stack([ones(40, ScalarType.Int64), cat([ones(28, ScalarType.Int64), zeros(12, ScalarType.Int64)])]);
        Tensor[] Grads()
        {
            using var scope = NewDisposeScope();
            var logits = rightPadded ? model.Forward(ids, attentionMask: mask) : model.Forward(ids);
            nn.functional.cross_entropy(logits.view(-1, 64), ids.view(-1)).backward();
            var grads = TestLora.TakeGrads(adapters);
            return grads;
        }
        int perPass = KernelRuns(32) ? 2 : 0;
        var plain = Grads();
        PeftSharp.Quantization.GradientCheckpointing.Enable(model);
        var (f0, b0) = CausalAttention.Calls;
        var ckpt = Grads();
        Assert.Equal((f0 + 2 * perPass, b0 + perPass), CausalAttention.Calls);   // forward + recompute, one backward
        PeftSharp.Quantization.GradientCheckpointing.Disable(model);
        for (int i = 0; i < plain.Length; i++) Assert.True(plain[i].eq(ckpt[i]).all().item<bool>(), $"gradient {i} differs");
        foreach (var g in plain.Concat(ckpt)) g.Dispose();
    }
}

/// <summary>The kernel's results do not depend on libtorch's thread count (each work item's arithmetic is fixed).
/// Serial: the thread count is process-wide.</summary>
[Collection(Training.SerialCollection.Name)]
public class CausalAttentionThreadsTests
{
    [Fact]
    public void SameBitsOnOneAndTwoThreads()
    {
        if (!CausalAttentionTests.KernelRuns(64)) return;
        using var scope = NewDisposeScope();
        manual_seed(13);
        var (q, k, v) = CausalAttentionTests.Inputs(2, 8, 2, 150, 64);
        var dOut = randn(2, 150, 8, 64);
        var (cos, sin) = CausalAttentionTests.Rotary(2, 150, 64);
        Tensor[] Run(int threads)
        {
            int was = get_num_threads();
            set_num_threads(threads);
            try
            {
                var o = CausalAttention.Compute(q, k, v, 0.125, cos, sin);
                return [o.detach(), .. autograd.grad([o], [q, k, v], [dOut])];
            }
            finally { set_num_threads(was); }
        }
        var (f0, b0) = CausalAttention.Calls;
        var one = Run(1);
        var two = Run(2);
        Assert.Equal((f0 + 2, b0 + 2), CausalAttention.Calls);
        for (int i = 0; i < one.Length; i++) Assert.True(one[i].eq(two[i]).all().item<bool>(), $"output {i} differs between 1 and 2 threads");
    }
}
