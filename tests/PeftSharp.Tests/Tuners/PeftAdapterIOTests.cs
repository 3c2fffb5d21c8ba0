using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>PEFT adapter folders: round trip, PEFT keys, fingerprints and every bad-input path.</summary>
[Collection("console")]
public class PeftAdapterIOTests
{
    static Tensor Logits(CausalLM model)
    {
        using var _ = no_grad();
        using var ids = tensor(new long[] { 5, 9, 33, 2, 71, 140, 7, 250 }).view(2, 4);
        return model.Forward(ids);
    }

    static string SaveRandom(string dir, LoraConfig cfg, out Tensor logits)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var adapter = LoraInjector.Inject(model, cfg, "default", 7);
        if (cfg.UseDora) LoraReferenceTests.PerturbMagnitudes(adapter);
        logits = Logits(model);
        PeftAdapterIO.Save(model, "default", dir);
        return dir;
    }

    [Fact]
    public void SavedAdapterRoundTripsWithPeftKeysAndConfig()
    {
        string dir = SaveRandom(Path.Combine(TestPaths.TempDir(), "ad"), new LoraConfig
        {
            R = 4, LoraAlpha = 16, UseDora = true, UseRslora = true, TargetModules = ["q_proj", "down_proj"], InitLoraWeights = LoraInit.False,
            RankPattern = new Dictionary<string, int> { ["down_proj"] = 2 },
        }, out var expected);
        using var st = new SafeTensorsFile(Path.Combine(dir, "adapter_model.safetensors"));
        Assert.Equal("pt", st.Metadata["format"]);
        Assert.Equal(new long[] { 4, 64 }, st.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").Shape);
        Assert.Equal(new long[] { 64, 2 }, st.Info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").Shape);
        Assert.Equal(new long[] { 64 }, st.Info("base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector").Shape);
        Assert.Equal(12, st.Tensors.Count);

        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
        foreach (var key in new[] { "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora",
                     "init_lora_weights", "bias", "rank_pattern", "alpha_pattern", "fan_in_fan_out", "modules_to_save", "layers_to_transform" })
            Assert.True(cfg.ContainsKey(key), key);
        Assert.Equal("LORA", cfg["peft_type"]!.GetValue<string>());
        Assert.False(cfg["init_lora_weights"]!.GetValue<bool>());
        Assert.Equal(2, cfg["rank_pattern"]!["down_proj"]!.GetValue<int>());
        Assert.False(cfg.ContainsKey(BaseFingerprint.LegacyConfigKey));   // PeftSharp's own metadata is in the sidecar
        var fp = JsonFile.ReadObject(Path.Combine(dir, AdapterFolderFiles.SidecarFile))["base_fingerprint"]!.AsObject();
        Assert.Equal("none", fp["scheme"]!.GetValue<string>());
        Assert.Equal("LlamaForCausalLM", fp["architecture"]!.GetValue<string>());
        Assert.Equal(4, fp["tensors"]!.AsObject().Count);

        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(model, dir);
        using var logits = Logits(model);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-6);
        expected.Dispose();
    }

    [Theory]
    [InlineData("lora")]
    [InlineData("dora")]
    public void ResavedPeftAdapterHasPeftsKeysShapesAndConfigValues(string name)
    {
        string src = Path.Combine(TestPaths.TinyLlama, "adapters", name);
        string dst = Path.Combine(TestPaths.TempDir(), name);
        using (var model = ModelLoader.Load(TestPaths.TinyLlama))
        {
            PeftAdapterIO.Load(model, src);
            PeftAdapterIO.Save(model, "default", dst);
        }
        using var a = new SafeTensorsFile(Path.Combine(src, "adapter_model.safetensors"));
        using var b = new SafeTensorsFile(Path.Combine(dst, "adapter_model.safetensors"));
        Assert.Equal(a.Tensors.Select(t => (t.Name, t.Dtype, string.Join(",", t.Shape))).Order(),
            b.Tensors.Select(t => (t.Name, t.Dtype, string.Join(",", t.Shape))).Order());
        foreach (var t in a.Tensors) Assert.True(a.RawBytes(t.Name).SequenceEqual(b.RawBytes(t.Name)), t.Name);
        var ca = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "adapter_config.json")))!.AsObject();
        var cb = JsonNode.Parse(File.ReadAllText(Path.Combine(dst, "adapter_config.json")))!.AsObject();
        foreach (var (key, value) in ca)
        {
            Assert.True(cb.ContainsKey(key), key);
            if (key == "target_modules") Assert.Equal(value!.AsArray().Select(x => x!.ToString()).Order(), cb[key]!.AsArray().Select(x => x!.ToString()).Order());
            else Assert.True(JsonNode.DeepEquals(value, cb[key]), $"{key}: {value?.ToJsonString()} vs {cb[key]?.ToJsonString()}");
        }
    }

    [Fact]
    public void AFreshAdapterIsSavedWithInferenceModeTrueAsPeftSavesIt()
    {
        // PEFT's save_pretrained sets inference_mode true around the save; a trained adapter wrote false before.
        string dir = Path.Combine(TestPaths.TempDir(), "fresh");
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            model.AddAdapter("a", new LoraConfig { R = 2, TargetModules = ["q_proj"] });
            model.SaveAdapter("a", dir);
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.True(config["inference_mode"]!.GetValue<bool>());
    }

    [Fact]
    public void UnknownConfigKeysWarnButLoad()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "ad");
        CopyFixture("lora", dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
        cfg["some_future_option"] = 3;
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        using (var warnings = new CapturedWarnings())
        {
            using var model = ModelLoader.Load(TestPaths.TinyLlama);
            PeftAdapterIO.Load(model, dir);
            Assert.Contains(warnings.Messages, w => w.Contains("some_future_option"));
        }

        // The CLI's logger prints a library warning as one "warning:" line on stderr: in-process, and in a peft process of
        // its own (where the CLI installs that logger itself; in-process the capture directs this run's warnings to it).
        var (code, _, err) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", dir, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(0, code);
        Assert.StartsWith("warning: ", Assert.Single(err.Split('\n'), l => l.Contains("some_future_option")));
        var run = PeftProcess.Run(["generate", "--model", TestPaths.TinyLlama, "--adapter", dir, "--prompt", "hi", "--max-new-tokens", "1"]);
        Assert.True(run.Code == 0, run.Err);
        Assert.StartsWith("warning: ", Assert.Single(run.Err.Split('\n'), l => l.Contains("some_future_option")));
    }

    [Fact]
    public void TargetsMatchingNothingListTheModelsModules()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var e = Assert.Throws<ArgumentException>(() => LoraInjector.Inject(model, new LoraConfig { TargetModules = ["c_attn"] }));
        Assert.Contains("c_attn", e.Message);
        Assert.Contains("q_proj", e.Message);
        Assert.Contains("down_proj", e.Message);
        Assert.Contains("model.layers.0.self_attn.q_proj", e.Message);
    }

    [Fact]
    public void WrongTensorShapeNamesTensorAndBothShapes()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "ad");
        CopyFixture("lora", dir);
        string file = Path.Combine(dir, "adapter_model.safetensors");
        var tensors = new List<(string, Tensor)>();
        using (var st = new SafeTensorsFile(file))
            foreach (var t in st.Tensors)
                tensors.Add((t.Name, t.Name.EndsWith("layers.1.self_attn.v_proj.lora_A.weight") ? zeros(4, 32) : st.Load(t.Name)));
        SafeTensorsWriter.Write(file, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(model, Path.Combine(TestPaths.TinyLlama, "adapters", "dora"), "keep");
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapterIO.Load(model, dir));
        Assert.Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", e.Message);
        Assert.Contains("[4, 32]", e.Message);
        Assert.Contains("[4, 64]", e.Message);
        // A failed load leaves no half-attached adapter behind and the active adapters as they were.
        Assert.Equal(["keep"], LoraModel.Of(model).Adapters.Keys);
        Assert.All(model.Linears(), l => Assert.False(l.Adapters.ContainsKey("default")));
        Assert.Equal([("keep", 1.0)], model.State.Active);
    }

    [Fact]
    public void TruncatedAdapterFileIsAClearError()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "ad");
        CopyFixture("dora", dir);
        string file = Path.Combine(dir, "adapter_model.safetensors");
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length - 100)]);
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapterIO.Load(model, dir));
        Assert.Contains("adapter_model.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void AdapterForAnotherBaseFailsNamingTensorsUnlessOverridden()
    {
        string dir = SaveRandom(Path.Combine(TestPaths.TempDir(), "ad"), new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False }, out var expected);
        expected.Dispose();
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using (no_grad()) ScalarArgs.With(0.01f, s => model.Layers[1].self_attn.v_proj.weight![0, 0].add_(s, ScalarArgs.One));
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapterIO.Load(model, dir));
        Assert.Contains("model.layers.1.self_attn.v_proj.weight differs", e.Message);
        Assert.DoesNotContain("q_proj", e.Message);
        Assert.Contains("--allow-base-mismatch", e.Message);

        using var warnings = new CapturedWarnings();
        PeftAdapterIO.Load(model, dir, allowMismatch: true);
        Assert.Single(warnings.Messages, w => w.Contains("v_proj.weight differs"));
    }

    [Fact]
    public void FingerprintSeesArchitectureAndQuantisation()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var paths = new[] { "model.layers.0.self_attn.q_proj" };
        var a = BaseFingerprint.Compute(model, paths);
        Assert.Empty(a.Differences(BaseFingerprint.Compute(model, paths)));
        model.QuantizationScheme = "nf4-b64-dq";
        var b = BaseFingerprint.Compute(model, paths);
        Assert.NotEqual(a.Digest, b.Digest);
        Assert.Contains(a.Differences(b), d => d.StartsWith("quantisation"));
        var c = BaseFingerprint.FromJson(a.ToJson(), "x", "base_fingerprint");
        Assert.Equal(a.Digest, c.Digest);
        Assert.Equal(a.Tensors, c.Tensors);
        Assert.Contains("model.layers.0.self_attn.q_proj.weight missing",
            a.Differences(BaseFingerprint.Compute(model, ["model.layers.0.self_attn.k_proj"])));
    }

    [Fact]
    public void AKnownBaseFingerprintIsRestrictedAndComparedInsteadOfRehashingTheWeights()
    {
        string dir = SaveRandom(Path.Combine(TestPaths.TempDir(), "ad"), new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False }, out var expected);
        expected.Dispose();
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var full = BaseFingerprint.Compute(model, model.Linears().Select(l => l.ModulePath));
        var paths = new[] { "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "not.a.module" };
        var restricted = full.Restrict(paths);
        var computed = BaseFingerprint.Compute(model, paths);
        Assert.Equal(computed.Digest, restricted.Digest);
        Assert.Equal(computed.Tensors, restricted.Tensors);

        // The weights match the adapter; a known fingerprint that says otherwise is what Load compares.
        const string vProj = "model.layers.1.self_attn.v_proj.weight";
        var stale = full with { Tensors = full.Tensors.ToDictionary(t => t.Key, t => t.Key == vProj ? "0000000000000000" : t.Value) };
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapterIO.Load(model, dir, knownBase: stale));
        Assert.Contains($"{vProj} differs", e.Message);
        Assert.DoesNotContain("q_proj", e.Message);
        Assert.Empty(LoraModel.Of(model).Adapters);
        PeftAdapterIO.Load(model, dir, knownBase: full);
        Assert.Equal(["default"], LoraModel.Of(model).Adapters.Keys);
    }

    [Fact]
    public void CrashMidSaveLeavesThePreviousAdapterIntact()
    {
        string dir = SaveRandom(Path.Combine(TestPaths.TempDir(), "ad"), new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = LoraInit.False }, out var expected);
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        LoraInjector.Inject(model, new LoraConfig { R = 8, TargetModules = ["k_proj"], InitLoraWeights = LoraInit.False }, "default", 99);
        Assert.Throws<IOException>(() => PeftAdapterIO.Save(model, "default", dir,
            rewriteEntries: entries => entries.Take(1).Append(new SafeTensorEntry("boom", "F32", [4], 16, _ => throw new IOException("disk full")))));
        Assert.Equal(new[] { "ad" }, Directory.GetFileSystemEntries(Path.GetDirectoryName(dir)!).Select(Path.GetFileName));
        using var fresh = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(fresh, dir);
        using var logits = Logits(fresh);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-6);
        expected.Dispose();
    }

    [Fact]
    public void UnsupportedConfigFieldsAreRejectedByName()
    {
        var o = JsonNode.Parse("""{"peft_type":"LORA","r":4,"target_modules":["q_proj"],"bias":"all"}""")!.AsObject();
        Assert.Contains("'bias'", Assert.Throws<InvalidDataException>(() => LoraConfig.FromJson(o, "cfg")).Message);
        o = JsonNode.Parse("""{"peft_type":"LORA","r":0,"target_modules":["q_proj"]}""")!.AsObject();
        Assert.Contains("'r'", Assert.Throws<InvalidDataException>(() => LoraConfig.FromJson(o, "cfg")).Message);
        o = JsonNode.Parse("""{"peft_type":"PROMPT_TUNING"}""")!.AsObject();
        Assert.Contains("LORA", Assert.Throws<InvalidDataException>(() => LoraConfig.FromJson(o, "cfg")).Message);
    }

    internal static void CopyFixture(string name, string dest)
    {
        Directory.CreateDirectory(dest);
        foreach (var f in Directory.GetFiles(Path.Combine(TestPaths.TinyLlama, "adapters", name)))
            File.Copy(f, Path.Combine(dest, Path.GetFileName(f)));
    }
}
