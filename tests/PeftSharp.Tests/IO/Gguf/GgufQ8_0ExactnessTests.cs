using LLama;
using LLama.Native;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// q8_0 bytes equal ggml's own quantiser's: llama.cpp's llama_model_quantize (through LLamaSharp) re-quantises our
/// f32 export, and every tensor both files hold as q8_0 must be byte-identical to `peft export gguf --type q8_0`.
/// The weights include the hard cases: an all-zero block, exact .5 ties (roundf rounds away from zero), scales
/// that are fp16 subnormals, and large values. A committed golden (made by llama.cpp's quantiser by this same
/// test, see WriteGolden) checks the managed encoder without the native library.
/// </summary>
[Collection("console")]
public class GgufQ8_0ExactnessTests(ITestOutputHelper output)
{
    static string GoldenPath => Path.Combine(TestPaths.Fixtures, "gguf", "q8_0-golden.gguf");
    const string Crafted = "model.layers.0.mlp.gate_proj.weight";

    /// <summary>A tiny llama whose gate_proj of layer 0 holds the hard cases (other tensors random).</summary>
    static string CraftedModel()
    {
        var cfg = RandomModel.LlamaConfig(hidden: 64, heads: 4, kvHeads: 2, vocab: 260, intermediate: 96);
        string dir = RandomModel.Write(cfg, seed: 7);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        var w = RandomModel.Weights(cfg, seed: 7);
        var g = w[Crafted].clone();
        g[0] = zeros(64);                                                        // zero block: d = 0, q = 0
        g[1] = tensor(Enumerable.Range(0, 64).Select(i => i % 32 == 0 ? 127f : (i % 7 - 3) + 0.5f * (i % 2 == 0 ? 1 : -1)).ToArray()); // d = 1: exact ties
        g[2] = g[2].Times(1e-6f);                                                     // d below fp16's normal range
        g[3] = g[3].Times(3e4f);                                                      // large values, d near fp16's max
        g[4] = tensor(Enumerable.Range(0, 64).Select(i => (i % 32 == 5 ? -1f : 1f) * (0.37f + i * 0.013f)).ToArray()); // negative amax
        w[Crafted] = g;
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), w.Select(kv => (kv.Key, kv.Value)).ToList(), new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    static string Export(string model, string type)
    {
        string path = Path.Combine(TestPaths.TempDir(), $"m-{type}.gguf");
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", model, "--out", path, "--type", type);
        Assert.True(code == 0, err);
        return path;
    }

    [Fact]
    public void ExportQ8_0_IsByteIdenticalToLlamaCppQuantize()
    {
        string model = CraftedModel();
        string f32 = Export(model, "f32"), ours = Export(model, "q8_0");
        string theirs = Path.Combine(TestPaths.TempDir(), "llama-quantize-q8_0.gguf");
        using (new LlamaCpp(f32, 16)) { } // loads the native library (and silences its log) before the quantiser is called
        Assert.True(LLamaQuantizer.Quantize(f32, theirs, LLamaFtype.MOSTLY_Q8_0, nthread: 1), "llama.cpp could not quantise the f32 export");
        using var a = new GgufReader(ours);
        using var b = new GgufReader(theirs);
        int compared = 0;
        foreach (var t in a.Tensors.Where(t => t.Type == GgmlType.Q8_0))
        {
            if (b.Tensor(t.Name).Type != GgmlType.Q8_0) continue; // llama-quantize's own per-tensor choice differs
            Assert.True(a.ReadBytes(t.Name).AsSpan().SequenceEqual(b.ReadBytes(t.Name)), $"{t.Name}: q8_0 bytes differ from llama.cpp's");
            compared++;
        }
        output.WriteLine($"{compared} q8_0 tensors byte-identical to llama.cpp's quantiser");
        Assert.Contains(a.Tensors, t => t.Name == "blk.0.ffn_gate.weight" && t.Type == GgmlType.Q8_0);
        Assert.True(compared >= 2 * 6, $"only {compared} tensors compared"); // q, k, v, o, gate, up of both layers at least
        if (Environment.GetEnvironmentVariable("PEFTSHARP_WRITE_GGUF_GOLDENS") == "1") WriteGolden(f32, b);
    }

    /// <summary>The crafted tensor's f32 values and llama.cpp's q8_0 bytes of them, as a small GGUF (dev time only).</summary>
    static void WriteGolden(string f32, GgufReader quantised)
    {
        using var src = new GgufReader(f32);
        const string name = "blk.0.ffn_gate.weight";
        var info = src.Tensor(name);
        byte[] input = src.ReadBytes(name), expected = quantised.ReadBytes(name);
        GgufWriter.Write(GoldenPath,
            [new("golden.source", GgufValue.Str("llama.cpp llama_model_quantize (LLamaSharp.Backend.Cpu 0.30.0), MOSTLY_Q8_0"))],
            [new GgufTensor("input", info.Shape, GgmlType.F32, s => s.Write(input)), new GgufTensor("expected", info.Shape, GgmlType.Q8_0, s => s.Write(expected))]);
    }

    [Fact]
    public void QuantizeQ8_0_MatchesCommittedLlamaCppGolden()
    {
        using var golden = new GgufReader(GoldenPath);
        var input = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(golden.ReadBytes("input")).ToArray();
        var ours = GgmlQuants.Encode(GgmlType.Q8_0, input);
        Assert.Equal(golden.ReadBytes("expected"), ours);
    }
}
