using LLama.Native;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `peft export gguf --type bf16|q4_0|q4_K_M` equals llama-quantize: llama.cpp's own llama_model_quantize (through
/// LLamaSharp's native library) re-quantises our f32 export, and every tensor of the two files must have the same
/// name, ggml type and bytes: the per-tensor choices (q6_K output / attn_v / ffn_down, q4_K elsewhere) and the
/// fallbacks of rows that are not whole blocks (q5_0, q8_0, f16) included. The weights hold the hard cases (a zero
/// super-block, exact .5 ties, fp16-subnormal scales, large values, a negative extreme). Committed goldens (rows of
/// llama.cpp's output, see WriteGoldens) check the managed encoders without the native library.
/// </summary>
[Collection("console")]
public class GgufLlamaQuantizeExactnessTests(ITestOutputHelper output)
{
    static string GoldenPath => Path.Combine(TestPaths.Fixtures, "gguf", "kquants-golden.gguf");
    const int GoldenRows = 6;

    static readonly Dictionary<string, LLamaFtype> Ftypes = new()
    {
        ["bf16"] = LLamaFtype.MOSTLY_BF16, ["q4_0"] = LLamaFtype.MOSTLY_Q4_0, ["q4_K_M"] = LLamaFtype.MOSTLY_Q4_K_M,
    };

    /// <summary>
    /// A llama whose rows are whole 256-value super-blocks (hidden 256, intermediate 512), 8 layers so use_more_bits
    /// picks layers 0, 3, 6, 7; layer 0's gate_proj and v_proj start with the hard cases.
    /// </summary>
    static string KQuantModel(bool tied, string modelType = "llama", int hidden = 256)
    {
        var cfg = RandomModel.LlamaConfig(hidden: hidden, layers: 8, heads: 4, kvHeads: 2, vocab: 260, intermediate: 2 * hidden, tied: tied, modelType: modelType);
        string dir = RandomModel.Write(cfg, seed: 11);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        var w = RandomModel.Weights(cfg, seed: 11);
        foreach (var name in new[] { "model.layers.0.mlp.gate_proj.weight", "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.qkv_proj.weight" }.Where(w.ContainsKey))
        {
            var g = w[name].clone();
            g[0] = zeros(hidden);                                                                  // zero super-block
            g[1] = tensor(Enumerable.Range(0, hidden).Select(i => i % 32 == 0 ? 8f : (i % 9 - 4) + 0.5f).ToArray()); // exact ties
            g[2] = g[2].Times(1e-6f);                                                                   // fp16-subnormal scales
            g[3] = g[3].Times(3e3f);                                                                    // large values
            g[4] = tensor(Enumerable.Range(0, hidden).Select(i => (i % 32 == 5 ? -1f : 1f) * (0.37f + i * 0.013f)).ToArray()); // negative extreme
            g[5] = g[5].abs().Plus(0.5f);                                                             // all positive (min clamps to 0)
            w[name] = g;
        }
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), w.Select(kv => (kv.Key, kv.Value)).ToList(), new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    static string Export(string model, string type, string tag)
    {
        string path = Path.Combine(TestPaths.TempDir(), $"{tag}-{type}.gguf");
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", model, "--out", path, "--type", type);
        Assert.True(code == 0, err);
        return path;
    }

    static string LlamaQuantize(string f32, string type)
    {
        string theirs = Path.Combine(TestPaths.TempDir(), $"llama-quantize-{type}.gguf");
        using (new LlamaCpp(f32, 16)) { } // loads the native library (and silences its log) before the quantiser is called
        // llama_model_quantize with llama.cpp's own default parameters (what the llama-quantize tool runs; LLamaSharp's
        // LLamaQuantizer wrapper refuses BF16).
        var p = LLamaModelQuantizeParams.Default();
        p.ftype = Ftypes[type];
        p.nthread = 1;
        uint rc = NativeApi.llama_model_quantize(f32, theirs, ref p);
        Assert.True(rc == 0, $"llama.cpp could not quantise {f32} to {type} ({rc})");
        return theirs;
    }

    /// <summary>Every tensor: same name, type and bytes. Returns how many tensors of each type were compared.</summary>
    Dictionary<GgmlType, int> AssertSameTensors(string ours, string theirs)
    {
        using var a = new GgufReader(ours);
        using var b = new GgufReader(theirs);
        Assert.Equal(b.Tensors.Select(t => t.Name).Order(), a.Tensors.Select(t => t.Name).Order());
        var counts = new Dictionary<GgmlType, int>();
        foreach (var t in a.Tensors)
        {
            var theirType = b.Tensor(t.Name).Type;
            Assert.True(t.Type == theirType, $"{t.Name}: we wrote {t.Type}, llama-quantize chose {theirType}");
            Assert.True(a.ReadBytes(t.Name).AsSpan().SequenceEqual(b.ReadBytes(t.Name)), $"{t.Name} ({t.Type}): bytes differ from llama-quantize's");
            counts[t.Type] = counts.GetValueOrDefault(t.Type) + 1;
        }
        output.WriteLine($"{Path.GetFileName(ours)}: byte-identical to llama-quantize: {string.Join(", ", counts.Select(kv => $"{kv.Value} {kv.Key}"))}");
        return counts;
    }

    [Theory]
    [InlineData("q4_K_M", false)]
    [InlineData("q4_K_M", true)]
    [InlineData("q4_0", false)]
    [InlineData("bf16", false)]
    public void Export_IsByteIdenticalToLlamaQuantize(string type, bool tied)
    {
        string model = KQuantModel(tied);
        string f32 = Export(model, "f32", "k"), ours = Export(model, type, "k");
        string theirs = LlamaQuantize(f32, type);
        var counts = AssertSameTensors(ours, theirs);
        using var r = new GgufReader(ours);
        GgmlType TypeOf(string n) => r.Tensor(n).Type;
        string head = tied ? "token_embd.weight" : "output.weight";
        switch (type)
        {
            case "q4_K_M":
                Assert.Equal(GgmlType.Q6_K, TypeOf(head));
                foreach (int layer in new[] { 0, 3, 6, 7 }) // use_more_bits(i, 8)
                {
                    Assert.Equal(GgmlType.Q6_K, TypeOf($"blk.{layer}.attn_v.weight"));
                    Assert.Equal(GgmlType.Q6_K, TypeOf($"blk.{layer}.ffn_down.weight"));
                }
                Assert.Equal(GgmlType.Q4_K, TypeOf("blk.1.attn_v.weight"));
                Assert.Equal(GgmlType.Q4_K, TypeOf("blk.0.ffn_gate.weight"));
                break;
            case "q4_0":
                Assert.Equal(GgmlType.Q6_K, TypeOf(head));
                Assert.Equal(GgmlType.Q4_0, TypeOf("blk.0.ffn_gate.weight"));
                break;
            case "bf16":
                Assert.Equal(GgmlType.BF16, TypeOf("blk.0.ffn_gate.weight"));
                break;
        }
        Assert.Equal(GgmlType.F32, TypeOf("blk.0.attn_norm.weight"));
        if (Environment.GetEnvironmentVariable("PEFTSHARP_WRITE_GGUF_GOLDENS") == "1") AddGoldens(f32, theirs, tied ? [] : ["blk.0.ffn_gate.weight", "blk.0.attn_v.weight"]);
    }

    /// <summary>
    /// phi3's fused attn_qkv counts as attn_v in q4_K_M (q6_K on use_more_bits layers, else q4_K; q8_0 / q5_0 where
    /// its rows are not whole super-blocks): byte-identical to llama-quantize.
    /// </summary>
    [Theory]
    [InlineData(256, nameof(GgmlType.Q6_K), nameof(GgmlType.Q4_K))] // by name: GgmlType is internal
    [InlineData(64, nameof(GgmlType.Q8_0), nameof(GgmlType.Q5_0))]
    public void Phi3FusedQkv_Q4_K_M_MatchesLlamaQuantize(int hidden, string layer0Type, string layer1Type)
    {
        GgmlType layer0 = Enum.Parse<GgmlType>(layer0Type), layer1 = Enum.Parse<GgmlType>(layer1Type);
        string model = KQuantModel(tied: false, modelType: "phi3", hidden: hidden);
        string f32 = Export(model, "f32", "phi3"), ours = Export(model, "q4_K_M", "phi3");
        AssertSameTensors(ours, LlamaQuantize(f32, "q4_K_M"));
        using var r = new GgufReader(ours);
        Assert.Equal(layer0, r.Tensor("blk.0.attn_qkv.weight").Type);
        Assert.Equal(layer1, r.Tensor("blk.1.attn_qkv.weight").Type);
    }

    /// <summary>
    /// Rows that are not whole super-blocks (the tiny fixture: hidden 64, intermediate 176): llama-quantize's fallbacks
    /// q4_K -> q5_0, q6_K -> q8_0, and f16 where even 32-value blocks do not fit (ffn_down's 176).
    /// </summary>
    [Fact]
    public void Q4_K_M_Fallbacks_MatchLlamaQuantize()
    {
        string f32 = Export(TestPaths.TinyLlama, "f32", "tiny"), ours = Export(TestPaths.TinyLlama, "q4_K_M", "tiny");
        string theirs = LlamaQuantize(f32, "q4_K_M");
        var counts = AssertSameTensors(ours, theirs);
        Assert.True(counts.GetValueOrDefault(GgmlType.Q5_0) > 0 && counts.GetValueOrDefault(GgmlType.Q8_0) > 0 && counts.GetValueOrDefault(GgmlType.F16) > 0);
        if (Environment.GetEnvironmentVariable("PEFTSHARP_WRITE_GGUF_GOLDENS") == "1") AddGoldens(f32, theirs, ["blk.0.attn_q.weight"]);
    }

    /// <summary>Top-1 agreement: llama.cpp running our q4_0 / q4_K_M files picks PeftSharp's f32 next token.</summary>
    [Theory]
    [InlineData("q4_0")]
    [InlineData("q4_K_M")]
    public void QuantisedExport_AgreesOnTopToken(string type)
    {
        string model = KQuantModel(tied: false);
        int[] prompt = [5, 17, 99, 42, 200, 7, 63, 11];
        float[] ours;
        using (var m = ModelLoader.Load(model))
        using (no_grad())
        using (var ids = tensor(prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0))
        using (var all = m.Forward(ids, lastOnly: true))
            ours = all[0, -1].data<float>().ToArray();
        using var cpp = new LlamaCpp(Export(model, type, "top"));
        var theirs = cpp.LastLogits(prompt);
        double num = 0, den = 0;
        for (int i = 0; i < ours.Length; i++) { num += Math.Pow(theirs[i] - ours[i], 2); den += ours[i] * (double)ours[i]; }
        output.WriteLine($"{type}: last-position logits relative error {Math.Sqrt(num / den):E2}");
        Assert.Equal(LlamaCpp.ArgMax(ours), LlamaCpp.ArgMax(theirs));
    }

    /// <summary>Appends the first rows of each named tensor (f32 input, llama.cpp's bytes) to the golden (dev time only).</summary>
    static void AddGoldens(string f32, string quantised, string[] names)
    {
        var tensors = new List<GgufTensor>();
        if (File.Exists(GoldenPath))
        {
            using var old = new GgufReader(GoldenPath);
            foreach (var t in old.Tensors)
            {
                var bytes = old.ReadBytes(t.Name);
                tensors.Add(new GgufTensor(t.Name, t.Shape, t.Type, s => s.Write(bytes)));
            }
        }
        using var src = new GgufReader(f32);
        using var q = new GgufReader(quantised);
        foreach (var name in names)
        {
            var type = q.Tensor(name).Type;
            long row = src.Tensor(name).Shape[^1];
            var shape = new[] { (long)GoldenRows, row };
            byte[] input = src.ReadBytes(name)[..(int)(GoldenRows * row * 4)];
            byte[] expected = q.ReadBytes(name)[..(int)GgmlTypes.ByteSize(type, row, GoldenRows * row)];
            tensors.RemoveAll(t => t.Name == $"input.{type}" || t.Name == $"expected.{type}");
            tensors.Add(new GgufTensor($"input.{type}", shape, GgmlType.F32, s => s.Write(input)));
            tensors.Add(new GgufTensor($"expected.{type}", shape, type, s => s.Write(expected)));
        }
        GgufWriter.Write(GoldenPath,
            [new("golden.source", GgufValue.Str("llama.cpp llama_model_quantize (LLamaSharp.Backend.Cpu 0.30.0): first rows of quantised test tensors"))],
            tensors);
    }

    /// <summary>Each committed golden type: our encoder on the input rows gives llama.cpp's bytes.</summary>
    [Fact]
    public void Encoders_MatchCommittedLlamaCppGoldens()
    {
        using var golden = new GgufReader(GoldenPath);
        var types = golden.Tensors.Where(t => t.Name.StartsWith("expected.", StringComparison.Ordinal)).Select(t => t.Type).ToList();
        Assert.Superset(new HashSet<GgmlType> { GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.BF16 }, types.ToHashSet());
        foreach (var type in types)
        {
            var input = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(golden.ReadBytes($"input.{type}")).ToArray();
            Assert.True(golden.ReadBytes($"expected.{type}").AsSpan().SequenceEqual(GgmlQuants.Encode(type, input)), $"{type}: our encoder differs from llama.cpp's golden bytes");
        }
    }
}
