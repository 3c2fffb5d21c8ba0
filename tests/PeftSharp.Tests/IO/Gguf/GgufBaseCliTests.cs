using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `--model FILE.gguf` through the CLI: generate gives the HF folder's text; LoRA and QLoRA train on it; the adapter's
/// fingerprint names the GGUF, is accepted on the same file and refused on another; merge writes an HF folder;
/// export gguf-adapter against the GGUF base is what llama.cpp reproduces. Bad files: one line naming file and cause.
/// </summary>
[Collection("console")]
public class GgufBaseCliTests(ITestOutputHelper output)
{
    static readonly int[] Prompt = [5, 17, 99, 42, 200, 7, 63, 11];

    static string ExportTiny(string model, string dir, string name = "tiny.gguf")
    {
        string path = Path.Combine(dir, name);
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", model, "--out", path, "--type", "f32");
        Assert.True(code == 0, err);
        return path;
    }

    static void AssertOneLineError(int code, string err, string mustContain, string because)
    {
        Assert.NotEqual(0, code);
        var lines = err.Trim().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line, got: {err}");
        Assert.Contains(mustContain, err);
        Assert.Contains(because, err);
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void Generate_OnGguf_EqualsTheHfFolder()
    {
        string gguf = ExportTiny(TestPaths.TinyLlama, TestPaths.TempDir());
        string[] flags = ["--prompt", "Lily", "--max-new-tokens", "12", "--temperature", "0"];
        var (c1, fromGguf, e1) = CliCapture.Run(["generate", "--model", gguf, .. flags]);
        var (c2, fromHf, e2) = CliCapture.Run(["generate", "--model", TestPaths.TinyLlama, .. flags]);
        Assert.True(c1 == 0, e1);
        Assert.True(c2 == 0, e2);
        Assert.Equal(fromHf, fromGguf);
        // A folder holding exactly one .gguf is the same base.
        var (c3, fromFolder, e3) = CliCapture.Run(["generate", "--model", Path.GetDirectoryName(gguf)!, .. flags]);
        Assert.True(c3 == 0, e3);
        Assert.Equal(fromHf, fromFolder);
    }

    /// <summary>`peft inspect --model FILE.gguf` lists the file's tensors (it used to fail: "no model.safetensors ... all N tensors missing").</summary>
    [Fact]
    public void Inspect_OnGguf_ListsItsTensors()
    {
        string gguf = ExportTiny(TestPaths.TinyLlama, TestPaths.TempDir());
        var (code, stdout, err) = CliCapture.Run("inspect", "--model", gguf);
        Assert.True(code == 0, err);
        using var r = new GgufReader(gguf);
        Assert.Contains($"GGUF v{r.Version}", stdout);
        Assert.Matches($@"stored tensors\s+│\s+{r.Tensors.Count}\s", stdout);
        foreach (var t in r.Tensors) Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape(t.Name)}\s+│\s+f32\s+│\s+\[{string.Join(", ", t.Shape)}\]", stdout);
    }

    string Train(string model, string dir, string method, string name)
    {
        string data = Path.Combine(dir, "data.jsonl");
        File.WriteAllText(data, string.Concat(Enumerable.Range(0, 4).Select(i => new JsonObject { ["text"] = $"Lily saw {i} birds and a dog." }.ToJsonString() + "\n")));
        string run = Path.Combine(dir, name);
        var (code, stdout, err) = CliCapture.Run("train", "--model", model, "--data", data, "--method", method, "--steps", "3", "--batch", "1",
            "--max-seq", "32", "--lr", "0.01", "--out", run);
        output.WriteLine(stdout + err);
        Assert.True(code == 0, err);
        return Path.Combine(run, "final");
    }

    [Fact]
    public void LoraOnGguf_FingerprintNamesTheFile_MergeAndLlamaCppAdapterReproduceIt()
    {
        string dir = TestPaths.TempDir();
        string gguf = ExportTiny(TestPaths.TinyLlama, dir);
        string adapter = Train(gguf, dir, "lora", "lora-run");

        // The fingerprint records the GGUF by file name and tensor-data hash.
        var fp = JsonFile.ReadObject(Path.Combine(adapter, AdapterFolderFiles.SidecarFile))["base_fingerprint"]!;
        string source = fp["source"]!.GetValue<string>();
        Assert.StartsWith("tiny.gguf sha256:", source);

        // Same GGUF: accepted. Another GGUF (same shapes, other weights): refused, naming the difference.
        string[] gen = ["--prompt", "Lily", "--max-new-tokens", "4", "--temperature", "0"];
        var (ok, _, okErr) = CliCapture.Run(["generate", "--model", gguf, "--adapter", adapter, .. gen]);
        Assert.True(ok == 0, okErr);
        string otherDir = TestPaths.TempDir();
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(otherDir, "tokenizer.json"));
        RandomModel.Write(JsonFile.ReadObject(Path.Combine(TestPaths.TinyLlama, "config.json")), seed: 99, dir: otherDir);
        string other = ExportTiny(otherDir, TestPaths.TempDir(), "other.gguf");
        var (bad, _, badErr) = CliCapture.Run(["generate", "--model", other, "--adapter", adapter, .. gen]);
        Assert.NotEqual(0, bad);
        Assert.Contains("different base model", badErr);
        Assert.Contains("GGUF base tiny.gguf", badErr);

        // merge writes an HF folder; llama.cpp running the base GGUF + our adapter GGUF gives the merged model's logits.
        string merged = Path.Combine(dir, "merged");
        var (m, _, mErr) = CliCapture.Run("merge", "--model", gguf, "--adapter", adapter, "--out", merged);
        Assert.True(m == 0, mErr);
        Assert.True(File.Exists(Path.Combine(merged, "model.safetensors")) && File.Exists(Path.Combine(merged, "tokenizer.json")));
        string adapterGguf = Path.Combine(dir, "adapter.gguf");
        var (x, _, xErr) = CliCapture.Run("export", "gguf-adapter", "--model", gguf, "--adapter", adapter, "--out", adapterGguf);
        Assert.True(x == 0, xErr);
        float[] ours;
        using (var model = ModelLoader.Load(merged))
        using (no_grad())
        using (var ids = tensor(Prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0))
        using (var logits = model.Forward(ids, lastOnly: true))
            ours = logits[0, -1].data<float>().ToArray();
        using var baseOnly = new LlamaCpp(gguf);
        using var withAdapter = new LlamaCpp(gguf, lora: adapterGguf);
        double rel = Rel(withAdapter.LastLogits(Prompt), ours), moved = Rel(baseOnly.LastLogits(Prompt), ours);
        output.WriteLine($"llama.cpp base GGUF + adapter GGUF vs PeftSharp merged: {rel:E2} relative (base alone: {moved:E2})");
        Assert.True(rel < 1e-4, $"{rel:E2}");
        Assert.True(moved > 1e-4, "training changed nothing; the round trip would prove nothing");
    }

    /// <summary>QLoRA on a GGUF base of each family read (phi3's fused and gemma2's norm-shifted weights included).</summary>
    [Theory]
    [InlineData("llama")]
    [InlineData("phi3")]
    [InlineData("gemma2")]
    public void QloraOnGguf_Trains(string family)
    {
        string dir = TestPaths.TempDir();
        string gguf = ExportTiny(family == "llama" ? TestPaths.TinyLlama : GgufLlamaCppParityTests.FamilyModel(family), dir);
        string adapter = Train(gguf, dir, "qlora", "qlora-run");
        var fp = JsonFile.ReadObject(Path.Combine(adapter, AdapterFolderFiles.SidecarFile))["base_fingerprint"]!;
        Assert.StartsWith("nf4", fp["scheme"]!.GetValue<string>());
        Assert.StartsWith("tiny.gguf sha256:", fp["source"]!.GetValue<string>());
    }

    static double Rel(float[] a, float[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - (double)b[i]) * (a[i] - (double)b[i]); den += (double)b[i] * b[i]; }
        return Math.Sqrt(num / den);
    }

    // ---- bad input ----

    [Fact]
    public void TruncatedGguf_OneLineNamingFileAndCause()
    {
        string dir = TestPaths.TempDir();
        var bytes = File.ReadAllBytes(ExportTiny(TestPaths.TinyLlama, dir));
        string cut = Path.Combine(dir, "cut.gguf");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
        var (code, _, err) = CliCapture.Run("generate", "--model", cut, "--prompt", "Lily");
        AssertOneLineError(code, err, "cut.gguf", "truncated");
    }

    [Fact]
    public void CorruptGguf_OneLineNamingFileAndCause()
    {
        string dir = TestPaths.TempDir();
        var bytes = File.ReadAllBytes(ExportTiny(TestPaths.TinyLlama, dir));
        bytes[0] = (byte)'X';
        string bad = Path.Combine(dir, "corrupt.gguf");
        File.WriteAllBytes(bad, bytes);
        var (code, _, err) = CliCapture.Run("generate", "--model", bad, "--prompt", "Lily");
        AssertOneLineError(code, err, "corrupt.gguf", "not a GGUF file");
    }

    [Fact]
    public void UnknownArchitecture_OneLineNamingFileAndCause()
    {
        string path = Path.Combine(TestPaths.TempDir(), "gpt2.gguf");
        GgufWriter.Write(path,
            [new("general.architecture", GgufValue.Str("gpt2")), new("general.type", GgufValue.Str("model"))],
            [new GgufTensor("token_embd.weight", [8, 4], GgmlType.F32, s => s.Write(new byte[8 * 4 * 4]))]);
        var (code, _, err) = CliCapture.Run("generate", "--model", path, "--prompt", "Lily");
        AssertOneLineError(code, err, "gpt2.gguf", "architecture 'gpt2'");
    }

    /// <summary>Our f32 export of <paramref name="phi3Dir"/> rewritten with extra metadata and tensors after token_embd.</summary>
    static string Phi3GgufWith(string phi3Dir, string name, KeyValuePair<string, GgufValue>[] keys, Func<int, GgufTensor[]> tensors)
    {
        string dir = TestPaths.TempDir();
        string plain = ExportTiny(phi3Dir, dir);
        string path = Path.Combine(dir, name);
        using var r = new GgufReader(plain);
        var all = r.Tensors.Select(t => new GgufTensor(t.Name, t.Shape, t.Type, s => s.Write(r.ReadBytes(t.Name)))).ToList();
        all.InsertRange(1, tensors((int)r.GetUInt("phi3.rope.dimension_count") / 2));
        GgufWriter.Write(path, [.. r.Metadata, .. keys], all);
        return path;
    }

    /// <summary>
    /// A phi3 GGUF with longrope, as convert_hf_to_gguf.py's Phi3MiniModel writes it (rope_factors_long/short
    /// tensors, rope.scaling.attn_factor): refused in one line, not run with plain rope.
    /// </summary>
    [Fact]
    public void Phi3LongRopeGguf_OneLineNamingFileAndCause()
    {
        string bad = Phi3GgufWith(GgufLlamaCppParityTests.FamilyModel("phi3"), "phi3-longrope.gguf",
            [new("phi3.rope.scaling.attn_factor", GgufValue.F32(1.19f))],
            half => [new("rope_factors_long.weight", [half], GgmlType.F32, s => s.Write(new byte[half * 4])),
                     new("rope_factors_short.weight", [half], GgmlType.F32, s => s.Write(new byte[half * 4]))]);
        var (code, _, err) = CliCapture.Run("generate", "--model", bad, "--prompt", "Lily");
        AssertOneLineError(code, err, "phi3-longrope.gguf", "longrope");
    }

    /// <summary>
    /// A phi3 GGUF's positive attention.sliding_window (Phi-3-mini's 2047, as the converter writes it) is read as
    /// HF's sliding_window: the model is the HF folder with that window (llama.cpp ignores it: "Phi SWA is currently
    /// disabled"), and the 8-token prompt is longer than the window of 4, so it changes the logits.
    /// </summary>
    [Fact]
    public void Phi3SlidingWindowGguf_IsTheHfFolderWithThatWindow()
    {
        string hfDir = GgufLlamaCppParityTests.FamilyModel("phi3");
        string gguf = Phi3GgufWith(hfDir, "phi3-swa.gguf", [new("phi3.attention.sliding_window", GgufValue.U32(4))], _ => []);
        var cfg = JsonFile.ReadObject(Path.Combine(hfDir, "config.json"));
        cfg["sliding_window"] = 4;
        File.WriteAllText(Path.Combine(hfDir, "config.json"), cfg.ToJsonString());
        using var fromGguf = ModelLoader.Load(gguf);
        using var windowed = ModelLoader.Load(hfDir);
        Assert.Equal(4, fromGguf.Config.SlidingWindow);
        Assert.All(fromGguf.Config.SlidingLayers, Assert.True);
        float[] Logits(CausalLM m)
        {
            using var _ = NewDisposeScope();
            using var noGrad = no_grad();
            return m.Forward(tensor(Prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0), lastOnly: true)[0, -1].data<float>().ToArray();
        }
        using var plain = ModelLoader.Load(Path.Combine(Path.GetDirectoryName(gguf)!, "tiny.gguf"));
        Assert.Null(plain.Config.SlidingWindow);
        var ours = Logits(fromGguf);
        Assert.Equal(Logits(windowed), ours);
        Assert.NotEqual(Logits(plain), ours);
    }

    [Fact]
    public void UnknownQuantType_OneLineNamingFileAndCause()
    {
        string dir = TestPaths.TempDir();
        var bytes = File.ReadAllBytes(ExportTiny(TestPaths.TinyLlama, dir));
        // The tensor info of token_embd.weight: name, n_dims (2), two dims, then the ggml type: make it iq2_xxs (16).
        var name = Encoding.UTF8.GetBytes("token_embd.weight");
        int at = bytes.AsSpan().IndexOf(name) + name.Length + 4 + 2 * 8;
        Assert.Equal(0, BitConverter.ToInt32(bytes, at)); // f32
        BitConverter.TryWriteBytes(bytes.AsSpan(at, 4), 16);
        string bad = Path.Combine(dir, "iq2.gguf");
        File.WriteAllBytes(bad, bytes);
        var (code, _, err) = CliCapture.Run("generate", "--model", bad, "--prompt", "Lily");
        AssertOneLineError(code, err, "iq2.gguf", "iq2_xxs");
    }
}
