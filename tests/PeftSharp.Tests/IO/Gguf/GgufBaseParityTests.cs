using LLama;
using LLama.Native;
using PeftSharp.Generation;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// A GGUF loaded as a base (ModelLoader.Load(FILE.gguf), what `--model FILE.gguf` does) gives the model llama.cpp runs
/// from the same file and the model of the HF folder it came from: the real TinyStories-260K GGUF (made by
/// llama.cpp's own converter) and our f32/f16/q8_0 exports, and llama.cpp's own q4_0/q4_1/q5_0/q5_1/q4_K_M
/// re-quantisations of them.
/// </summary>
[Collection("console")]
public class GgufBaseParityTests(ITestOutputHelper output)
{
    static readonly int[] Prompt = [5, 17, 99, 42, 200, 7, 63, 11];

    static float[] LastLogits(CausalLM model, int[] prompt)
    {
        using var _ = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0);
        return model.Forward(ids, lastOnly: true)[0, -1].data<float>().ToArray();
    }

    static double Rel(float[] a, float[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - (double)b[i]) * (a[i] - (double)b[i]); den += (double)b[i] * b[i]; }
        return Math.Sqrt(num / den);
    }

    static int ArgMax(float[] x) => Array.IndexOf(x, x.Max());

    string Export(string model, string type)
    {
        string path = Path.Combine(TestPaths.TempDir(), $"model-{type}.gguf");
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", model, "--out", path, "--type", type);
        Assert.True(code == 0, err);
        return path;
    }

    [Fact]
    public void RealTinyStoriesGguf_MatchesLlamaCppAndTheHfFolder()
    {
        string? root = RealFixtures.Folder("tinystories-260k", output);
        if (root is null) return;
        string gguf = Path.Combine(root, "raw", "stories260K.gguf");
        using var fromGguf = ModelLoader.Load(gguf);
        using var fromHf = ModelLoader.Load(Path.Combine(root, "hf"));
        using var tok = TextTokenizer.FromFolder(PeftSharp.Hub.ModelLocation.Resolve(gguf, "--model"));
        int[] prompt = tok.Encode("Once upon a time, there was a little dog", addSpecialTokens: true);
        using var cpp = new LlamaCpp(gguf);
        Assert.Equal(cpp.Tokenize("Once upon a time, there was a little dog"), prompt);

        var ours = LastLogits(fromGguf, prompt);
        double vsCpp = Rel(cpp.LastLogits(prompt), ours), vsHf = Rel(LastLogits(fromHf, prompt), ours);
        output.WriteLine($"stories260K.gguf: last-position logits vs llama.cpp {vsCpp:E2}, vs the HF folder {vsHf:E2} relative");
        Assert.True(vsCpp < 1e-4, $"vs llama.cpp {vsCpp:E2}");
        Assert.True(vsHf < 1e-4, $"vs HF folder {vsHf:E2}");
        var greedy = TextGenerator.Generate(fromGguf, prompt, new SamplingOptions { MaxNewTokens = 16 }, []).ToList();
        Assert.Equal(cpp.Greedy(prompt, 16), greedy);
    }

    [Fact]
    public void F32Export_LoadsTheExactWeights_AndMatchesLlamaCpp()
    {
        string gguf = Export(TestPaths.TinyLlama, "f32");
        using var fromGguf = ModelLoader.Load(gguf);
        using var fromHf = ModelLoader.Load(TestPaths.TinyLlama);
        // Every parameter bit for bit: the Q/K permutation is undone, names map back, nothing is transposed.
        var hf = fromHf.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in fromGguf.named_parameters())
            Assert.True(p.data<float>().ToArray().SequenceEqual(hf[name].data<float>().ToArray()), $"{name} differs from the HF folder's");
        using var cpp = new LlamaCpp(gguf);
        double rel = Rel(cpp.LastLogits(Prompt), LastLogits(fromGguf, Prompt));
        output.WriteLine($"tiny-llama f32 GGUF: vs llama.cpp {rel:E2} relative");
        Assert.True(rel < 1e-4, $"{rel:E2}");
    }

    [Fact]
    public void Qwen3F32Export_LoadsTheExactWeights_AndMatchesLlamaCpp()
    {
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        var cfg = RandomModel.Qwen3Config();
        cfg["vocab_size"] = 260;
        cfg["eos_token_id"] = 259;
        RandomModel.Write(cfg, seed: 3, dir: dir);
        string gguf = Export(dir, "f32");
        using var fromGguf = ModelLoader.Load(gguf);
        using var fromHf = ModelLoader.Load(dir);
        Assert.True(fromGguf.Config.QkNorm && fromGguf.Config.TieWordEmbeddings);
        var hf = fromHf.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in fromGguf.named_parameters())
            Assert.True(p.data<float>().ToArray().SequenceEqual(hf[name].data<float>().ToArray()), $"{name} differs from the HF folder's");
        using var cpp = new LlamaCpp(gguf);
        double rel = Rel(cpp.LastLogits(Prompt), LastLogits(fromGguf, Prompt));
        output.WriteLine($"tiny qwen3 f32 GGUF: vs llama.cpp {rel:E2} relative");
        Assert.True(rel < 1e-4, $"{rel:E2}");
    }

    /// <summary>
    /// phi3 (fused qkv_proj and gate_up_proj read as they are, partial rotary from rope.dimension_count) and gemma2
    /// (norms stored as 1 + w, post norms, soft-capping, sliding window of 4 on even layers with the 8-token prompt
    /// longer than it, query_pre_attn_scalar = head_dim as llama.cpp scales): the tiny random HF model, exported f32,
    /// loaded back as a base, has the HF model's weights and logits, and llama.cpp agrees on the same file as the
    /// export parity test allows (gemma2: ggml's fp16 GELU table).
    /// </summary>
    [Theory]
    [InlineData("phi3", 1e-4)]
    [InlineData("gemma2", 1e-3)]
    public void FamilyF32Export_LoadsTheHfWeights_AndMatchesTheHfFolderAndLlamaCpp(string family, double vsLlamaCpp)
    {
        string dir = GgufLlamaCppParityTests.FamilyModel(family);
        string gguf = Export(dir, "f32");
        using var fromGguf = ModelLoader.Load(gguf);
        using var fromHf = ModelLoader.Load(dir);
        var (g, h) = (fromGguf.Config, fromHf.Config);
        Assert.Equal((h.RotaryDim, h.HeadDim, h.SlidingWindow, h.AttnLogitSoftcapping, h.FinalLogitSoftcapping, h.HiddenAct, h.TieWordEmbeddings),
            (g.RotaryDim, g.HeadDim, g.SlidingWindow, g.AttnLogitSoftcapping, g.FinalLogitSoftcapping, g.HiddenAct, g.TieWordEmbeddings));
        Assert.Equal(h.SlidingLayers, g.SlidingLayers);
        Assert.Equal(h.AttentionScale, g.AttentionScale, 12);
        if (family == "phi3") Assert.True(g.RotaryDim < g.HeadDim, "the test model has partial rotary");
        if (family == "gemma2") Assert.True(g.SlidingWindow == 4 && g.AttnLogitSoftcapping == 5.0 && g.FinalLogitSoftcapping == 3.0);
        var hf = fromHf.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(hf.Keys.Order(), fromGguf.named_parameters().Select(p => p.name).Order());
        foreach (var (name, p) in fromGguf.named_parameters())
        {
            float[] ours = p.data<float>().ToArray(), theirs = hf[name].data<float>().ToArray();
            // Gemma's norm w went into the file as fl(1 + w); reading subtracts 1, which loses the bits below 1's
            // ulp: within 2^-22 of w (the norm itself multiplies by 1 + w, where that is at most one rounding).
            if (family == "gemma2" && name.EndsWith("norm.weight", StringComparison.Ordinal))
                Assert.True(ours.Zip(theirs).All(x => Math.Abs(x.First - x.Second) <= 2.4e-7), $"{name} differs from the HF folder's by more than fp32 rounding of 1 + w");
            else Assert.True(ours.SequenceEqual(theirs), $"{name} differs from the HF folder's");
        }
        var fromGgufLogits = LastLogits(fromGguf, Prompt);
        double vsHf = Rel(LastLogits(fromHf, Prompt), fromGgufLogits);
        using var cpp = new LlamaCpp(gguf);
        double rel = Rel(cpp.LastLogits(Prompt), fromGgufLogits);
        output.WriteLine($"tiny {family} f32 GGUF as base: vs the HF folder {vsHf:E2}, vs llama.cpp {rel:E2} relative");
        Assert.True(vsHf < 1e-5, $"vs HF folder {vsHf:E2}");
        Assert.True(rel < vsLlamaCpp, $"vs llama.cpp {rel:E2}");
    }

    /// <summary>
    /// f16 and q8_0 exports: PeftSharp dequantises the same bytes llama.cpp reads, but llama.cpp multiplies in the
    /// weight's type (f16 dot products; q8_0 weights against q8_0-quantised activations), so the logits differ by
    /// what that costs: measured ~1e-3 (f16) and ~1e-2 (q8_0) on this model; asserted with headroom, top-1 equal.
    /// </summary>
    [Theory]
    [InlineData("f16", 5e-3)]
    [InlineData("q8_0", 3e-2)]
    public void QuantisedExport_MatchesLlamaCppOnTheSameFile(string type, double tolerance)
    {
        string gguf = Export(TestPaths.TinyLlama, type);
        using var model = ModelLoader.Load(gguf);
        using var cpp = new LlamaCpp(gguf);
        var ours = LastLogits(model, Prompt);
        var theirs = cpp.LastLogits(Prompt);
        double rel = Rel(theirs, ours);
        output.WriteLine($"tiny-llama {type} GGUF: vs llama.cpp {rel:E2} relative");
        Assert.True(rel < tolerance, $"{rel:E2}");
        Assert.Equal(ArgMax(theirs), ArgMax(ours));
    }

    /// <summary>
    /// The k-quant and legacy 4/5-bit types, written by llama.cpp's own llama_model_quantize from our f32 export of a
    /// model whose rows are whole 256-value super-blocks. PeftSharp's dequantised model, exported back to f32, is what
    /// llama.cpp runs to 1e-4; on the quantised file itself llama.cpp agrees on top-1 and within what its quantised
    /// activations cost on this random model (measured 2e-2..6e-2, q5_K_M 1.3e-1; random weights amplify it).
    /// </summary>
    [Theory]
    [InlineData(LLamaFtype.MOSTLY_Q4_K_M, 0.1)]
    [InlineData(LLamaFtype.MOSTLY_Q5_K_M, 0.2)] // measured 1.3e-1: llama.cpp's q5_K x q8_K dot products on this random model
    [InlineData(LLamaFtype.MOSTLY_Q4_0, 0.1)]
    [InlineData(LLamaFtype.MOSTLY_Q4_1, 0.1)]
    [InlineData(LLamaFtype.MOSTLY_Q5_0, 0.1)]
    [InlineData(LLamaFtype.MOSTLY_Q5_1, 0.1)]
    public void LlamaCppQuantised_LoadsAndMatchesLlamaCpp(LLamaFtype ftype, double tolerance)
    {
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        RandomModel.Write(RandomModel.LlamaConfig(hidden: 256, layers: 2, heads: 4, kvHeads: 2, vocab: 260, intermediate: 512), seed: 7, dir: dir);
        string f32 = Export(dir, "f32");
        string q = Path.Combine(TestPaths.TempDir(), $"{ftype}.gguf");
        using (new LlamaCpp(f32, 16)) { } // loads the native library before the quantiser is called
        Assert.True(LLamaQuantizer.Quantize(f32, q, ftype, nthread: 1), $"llama.cpp could not quantise to {ftype}");
        using (var r = new GgufReader(q))
            output.WriteLine($"{ftype}: {string.Join(", ", r.Tensors.GroupBy(t => t.Type).Select(g => $"{g.Count()} {GgufDequant.TypeName((uint)g.Key)}"))}");

        using var model = ModelLoader.Load(q);
        using var dense = ModelLoader.Load(dir);
        // Each weight near the f32 original: names, shapes and the Q/K permutation are right for quantised tensors too
        // (a wrongly permuted q_proj would be ~1.4 relative away).
        var f32Params = dense.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in model.named_parameters())
        {
            double w = TestPaths.RelativeError(p, f32Params[name]);
            Assert.True(w < 0.3, $"{name}: {w:E2} relative to the f32 weight");
        }
        // Exactness of the whole model: our dequantised weights, re-exported as f32, run by llama.cpp, give our logits.
        var ours = LastLogits(model, Prompt);
        using (var exact = new LlamaCpp(Export(q, "f32")))
        {
            double vsExact = Rel(exact.LastLogits(Prompt), ours);
            output.WriteLine($"{ftype}: vs llama.cpp on our dequantised weights (f32 re-export) {vsExact:E2} relative");
            Assert.True(vsExact < 1e-4, $"vs f32 re-export {vsExact:E2}");
        }
        // llama.cpp on the quantised file itself multiplies quantised weights with q8-quantised activations.
        using var cpp = new LlamaCpp(q);
        var theirs = cpp.LastLogits(Prompt);
        double rel = Rel(theirs, ours);
        output.WriteLine($"{ftype}: vs llama.cpp on the {ftype} file {rel:E2} relative (its quantised dot products)");
        Assert.True(rel < tolerance, $"vs llama.cpp {rel:E2}");
        Assert.Equal(ArgMax(theirs), ArgMax(ours));
    }
}
