using PeftSharp.Cli;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>peft merge writes a complete model folder; logits --adapter applies adapters.</summary>
[Collection("console")]
public class MergeCommandTests
{
    static string Adapter(string name) => Path.Combine(TestPaths.TinyLlama, "adapters", name);

    [Theory]
    [InlineData("lora", "logits_lora")]
    [InlineData("dora", "logits_dora")]
    public void MergedFolderReproducesAdaptedLogitsAndKeepsTheBaseSize(string adapter, string goldenKey)
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "merged");
        Assert.Equal(0, CliApp.Run(["merge", "--model", TestPaths.TinyLlama, "--adapter", Adapter(adapter), "--out", outDir]));
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(outDir, "config.json")));
        Assert.False(File.Exists(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal(new FileInfo(Path.Combine(TestPaths.TinyLlama, "model.safetensors")).Length,
            new FileInfo(Path.Combine(outDir, "model.safetensors")).Length);

        using var golden = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load(goldenKey);
        using var model = ModelLoader.Load(outDir);
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-5);
    }

    [Fact]
    public void GenerateFromMergedFolderEqualsGenerateWithTheAdapter()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "merged");
        Assert.Equal(0, CliApp.Run(["merge", "--model", TestPaths.TinyLlama, "--adapter", Adapter("dora"), "--out", outDir]));
        string Generate(params string[] extra)
        {
            var (code, stdout, _) = CliCapture.Run(["generate", "--prompt", "hello", "--max-new-tokens", "12", .. extra]);
            Assert.Equal(0, code);
            return stdout;
        }
        string merged = Generate("--model", outDir);
        string adapted = Generate("--model", TestPaths.TinyLlama, "--adapter", Adapter("dora"));
        string plain = Generate("--model", TestPaths.TinyLlama);
        Assert.Equal(adapted, merged);
        Assert.NotEqual(plain, merged);
    }

    [Fact]
    public void ShardedBf16BaseKeepsShardsDtypesAndSizes()
    {
        string baseDir = RandomModel.Write(RandomModel.LlamaConfig(modelType: "qwen2"), seed: 3, dtype: "BF16", shards: 2);
        File.WriteAllText(Path.Combine(baseDir, "tokenizer_config.json"), "{}");
        string[] staleWeights = ["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"];
        foreach (var stale in staleWeights) File.WriteAllText(Path.Combine(baseDir, stale), "stale unmerged weights");
        string adapterDir = Path.Combine(TestPaths.TempDir(), "ad");
        Tensor expected;
        using (var m = ModelLoader.Load(baseDir))
        {
            LoraInjector.Inject(m, new LoraConfig { R = 4, TargetModulesRegex = "all-linear", InitLoraWeights = LoraInit.False }, "default", 2);
            PeftAdapterIO.Save(m, "default", adapterDir);
            LoraModel.Of(m).Merge("default");
            using var _ = no_grad();
            using var ids = tensor(new long[] { 1, 5, 9, 20 }).unsqueeze(0);
            // What a bf16 merged checkpoint holds: the merged weights rounded to bf16.
            foreach (var l in m.Linears()) l.weight!.copy_(l.weight.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32));
            expected = m.Forward(ids);
        }
        string outDir = Path.Combine(TestPaths.TempDir(), "merged");
        Assert.Equal(0, CliApp.Run(["merge", "--model", baseDir, "--adapter", adapterDir, "--out", outDir]));
        foreach (var stale in staleWeights) Assert.False(File.Exists(Path.Combine(outDir, stale)), stale);
        Assert.True(File.Exists(Path.Combine(outDir, "model.safetensors.index.json")));
        foreach (var f in Directory.GetFiles(baseDir).Where(f => !staleWeights.Contains(Path.GetFileName(f))))
        {
            string mine = Path.Combine(outDir, Path.GetFileName(f));
            Assert.True(File.Exists(mine), Path.GetFileName(f));
            Assert.Equal(new FileInfo(f).Length, new FileInfo(mine).Length);
        }
        using var reader = new CheckpointReader(outDir);
        Assert.All(reader.Names, n => Assert.Equal("BF16", reader.Info(n).Dtype));
        using var merged = ModelLoader.Load(outDir);
        using var __ = no_grad();
        using var ids2 = tensor(new long[] { 1, 5, 9, 20 }).unsqueeze(0);
        using var logits = merged.Forward(ids2);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-5);
        expected.Dispose();
    }

    [Fact]
    public void MergeOntoAnotherBaseFailsWithoutOverride()
    {
        string otherBase = RandomModel.Write(RandomModel.LlamaConfig(hidden: 64, intermediate: 176, vocab: 260, heads: 4, kvHeads: 2), seed: 9);
        string adapterDir = Path.Combine(TestPaths.TempDir(), "ad");
        using (var m = ModelLoader.Load(TestPaths.TinyLlama))
        {
            LoraInjector.Inject(m, new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = LoraInit.False }, "default", 2);
            PeftAdapterIO.Save(m, "default", adapterDir);
        }
        string outDir = Path.Combine(TestPaths.TempDir(), "merged");
        Assert.Equal(1, CliApp.Run(["merge", "--model", otherBase, "--adapter", adapterDir, "--out", outDir]));
        Assert.False(Directory.Exists(outDir));
        Assert.Equal(0, CliApp.Run(["merge", "--model", otherBase, "--adapter", adapterDir, "--out", outDir, "--allow-base-mismatch"]));
    }

    [Fact]
    public void LogitsCommandAppliesWeightedAdapters()
    {
        string golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors");
        string output = Path.Combine(TestPaths.TempDir(), "out.safetensors");
        Assert.Equal(0, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--input", golden, "--output", output, "--adapter", Adapter("lora")]));
        using (var mine = new SafeTensorsFile(output))
        using (var gold = new SafeTensorsFile(golden))
        using (var a = mine.Load("logits"))
        using (var b = gold.Load("logits_lora"))
            Assert.True(TestPaths.RelativeError(a, b) <= 1e-5);

        // Half of a LoRA adapter (linear in its delta) at the logits level is not half-way in general, so compare
        // against the engine with the same weights instead.
        Assert.Equal(0, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--input", golden, "--output", output,
            "--adapter", $"x={Adapter("lora")}:0.5", "--adapter", $"{Adapter("dora")}:0.25"]));
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(model, Adapter("lora"), "x");
        PeftAdapterIO.Load(model, Adapter("dora"), "dora");
        LoraModel.Of(model).SetActive([("x", 0.5), ("dora", 0.25)]);
        using var g = new SafeTensorsFile(golden);
        using var ids = g.Load("input_ids");
        using var _ = no_grad();
        using var want = model.Forward(ids);
        using var got = new SafeTensorsFile(output);
        using var gotLogits = got.Load("logits");
        Assert.True(TestPaths.RelativeError(gotLogits, want) <= 1e-6);
    }

    [Fact]
    public void AdapterSpecsParse()
    {
        string d = Adapter("lora");
        var one = AdapterCli.Parse([d]);
        Assert.Equal(new AdapterCli.Spec("default", d, 1.0), one.Single());
        var many = AdapterCli.Parse([$"{d}:0.5", $"n={d}", $"m={d}:-1.5"]);
        Assert.Equal(new AdapterCli.Spec("lora", d, 0.5), many[0]);
        Assert.Equal(new AdapterCli.Spec("n", d, 1.0), many[1]);
        Assert.Equal(new AdapterCli.Spec("m", d, -1.5), many[2]);
        Assert.Throws<DirectoryNotFoundException>(() => AdapterCli.Parse(["/no/such/dir:0.5"]));
    }
}
