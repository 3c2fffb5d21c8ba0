using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>
/// PeftSharp's base fingerprint lives in peftsharp_adapter.json beside adapter_config.json, which keeps only the keys
/// PEFT's config class declares: before PEFT 0.14 an unknown key there is a TypeError in PeftConfigMixin.from_peft_type,
/// from 0.14 a warning to upgrade PEFT. Folders saved earlier (the key inside adapter_config.json) still load and checked.
/// </summary>
[Collection("console")]
public class AdapterSidecarTests
{
    /// <summary>
    /// Fields of PEFT's PeftConfigMixin + PeftConfig + LoraConfig at v0.15.0 (huggingface/peft
    /// b34d8a2ca1f491e6d96620a38fa6888dc97fb5d6, src/peft/config.py and src/peft/tuners/lora/config.py): the keys
    /// PeftSharp writes. 0.15 is the oldest release whose LoraConfig has every one of them (trainable_token_indices).
    /// </summary>
    static readonly HashSet<string> PeftLoraFields =
    [
        "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "task_type", "inference_mode",
        "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora",
        "modules_to_save", "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern",
        "megatron_config", "megatron_core", "trainable_token_indices", "loftq_config", "eva_config", "corda_config",
        "use_dora", "layer_replication", "runtime_config", "lora_bias",
    ];

    /// <summary>
    /// Fields of PeftConfigMixin + PeftConfig + PromptLearningConfig + PromptTuningConfig at the same commit
    /// (src/peft/config.py, src/peft/tuners/prompt_tuning/config.py).
    /// </summary>
    static readonly HashSet<string> PeftPromptTuningFields =
    [
        "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "task_type", "inference_mode",
        "num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers",
        "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path", "tokenizer_kwargs",
    ];

    static string TrainAdapter(string dir, params string[] method)
    {
        string run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run(["train", "--model", TestPaths.TinyLlama, "--data", ReversalTask.Write(dir, 4), "--steps", "1",
            "--batch", "1", "--max-seq", "16", "--out", run, .. method]);
        Assert.True(code == 0, stdout + err);
        return Path.Combine(run, "final");
    }

    [Theory]
    [InlineData("lora", "true")]
    [InlineData("dora", "true")]
    [InlineData("qlora", "true")]
    [InlineData("qdora", "true")]
    [InlineData("lora", "pissa")]
    [InlineData("prompt", null)]
    [InlineData("adapter", null)]
    public void TrainedAdapterConfigHoldsOnlyKeysPeftsConfigClassDeclares(string method, string? init)
    {
        string final = TrainAdapter(TestPaths.TempDir(), init is null ? ["--method", method] : ["--method", method, "--init", init]);
        var config = JsonFile.ReadObject(Path.Combine(final, AdapterFolderFiles.ConfigFile));
        string peftType = config["peft_type"]!.GetValue<string>();
        var allowed = peftType switch
        {
            "LORA" => PeftLoraFields,
            "PROMPT_TUNING" => PeftPromptTuningFields,
            // PEFT has no Houlsby method (PEFT_TYPE_TO_CONFIG_MAPPING refuses its peft_type): only PeftSharp's key is checked.
            _ => config.Select(p => p.Key).Where(k => !k.StartsWith("peftsharp_", StringComparison.Ordinal)).ToHashSet(),
        };
        var unknown = config.Select(p => p.Key).Where(k => !allowed.Contains(k)).ToList();
        Assert.True(unknown.Count == 0, $"{method} {init} ({peftType}): keys PEFT's config does not declare: {string.Join(", ", unknown)}");
        var fingerprint = JsonFile.ReadObject(Path.Combine(final, AdapterFolderFiles.SidecarFile))["base_fingerprint"]!;
        Assert.Equal(64, fingerprint["digest"]!.GetValue<string>().Length);
    }

    /// <summary>An adapter saved on the tiny base through the public API (new layout).</summary>
    static string SavedAdapter(string dir)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        model.AddAdapter("a", new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False }, seed: 1);
        model.SaveAdapter("a", dir);
        return dir;
    }

    /// <summary>Rewrites a folder as PeftSharp saved it before the sidecar: the fingerprint under the key in adapter_config.json.</summary>
    static JsonObject MakeLegacy(string dir)
    {
        string sidecar = Path.Combine(dir, AdapterFolderFiles.SidecarFile), configPath = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        var fingerprint = JsonFile.ReadObject(sidecar)["base_fingerprint"]!.AsObject();
        var config = JsonFile.ReadObject(configPath);
        config[BaseFingerprint.LegacyConfigKey] = fingerprint.DeepClone();
        File.WriteAllText(configPath, config.ToJsonString());
        File.Delete(sidecar);
        return fingerprint;
    }

    /// <summary>The tiny base with one adapted weight changed: another base, the same shapes.</summary>
    static string OtherBase(string dir)
    {
        string other = Directory.CreateDirectory(Path.Combine(dir, "other-base")).FullName;
        foreach (var f in Directory.GetFiles(TestPaths.TinyLlama)) File.Copy(f, Path.Combine(other, Path.GetFileName(f)));
        using var src = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "model.safetensors"));
        var tensors = src.Tensors.Select(t => (t.Name, src.Load(t.Name))).ToList();
        using (no_grad()) ScalarArgs.With(1.5, s => tensors.First(t => t.Name == "model.layers.0.self_attn.q_proj.weight").Item2.mul_(s));
        SafeTensorsWriter.Write(Path.Combine(other, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        foreach (var (_, t) in tensors) t.Dispose();
        return other;
    }

    static (int Code, string Out, string Err) Generate(string model, string adapter, params string[] extra) =>
        CliCapture.Run(["generate", "--model", model, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1", .. extra]);

    [Fact]
    public void FolderSavedBeforeTheSidecarLoadsWithItsBaseCheckAndResavesInTheNewLayout()
    {
        string dir = TestPaths.TempDir(), legacy = SavedAdapter(Path.Combine(dir, "legacy"));
        var fingerprint = MakeLegacy(legacy);

        var (code, stdout, err) = Generate(TestPaths.TinyLlama, legacy);
        Assert.True(code == 0, stdout + err);
        // The recorded base is still checked: another base is refused, and --allow-base-mismatch loads it with a warning.
        string other = OtherBase(dir);
        (code, _, err) = Generate(other, legacy);
        Assert.Equal(1, code);
        Assert.Contains("adapter was saved for a different base model (1 difference(s): model.layers.0.self_attn.q_proj.weight differs)", err);
        (code, _, err) = Generate(other, legacy, "--allow-base-mismatch");
        Assert.Equal(0, code);
        Assert.Contains("different base model", err);

        // Saving it again writes the new layout: adapter_config.json without the key, the same fingerprint in the sidecar.
        string resaved = Path.Combine(dir, "resaved");
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: legacy))
            model.SaveAdapter(model.ActiveAdapter!, resaved);
        Assert.False(JsonFile.ReadObject(Path.Combine(resaved, AdapterFolderFiles.ConfigFile)).ContainsKey(BaseFingerprint.LegacyConfigKey));
        var written = JsonFile.ReadObject(Path.Combine(resaved, AdapterFolderFiles.SidecarFile))["base_fingerprint"]!;
        Assert.Equal(fingerprint["digest"]!.GetValue<string>(), written["digest"]!.GetValue<string>());
        Assert.Equal(fingerprint.ToJsonString(), written.ToJsonString());
    }

    [Fact]
    public void AFolderWhoseSidecarAndConfigRecordDifferentBasesIsRefusedNamingBoth()
    {
        string dir = SavedAdapter(Path.Combine(TestPaths.TempDir(), "both"));
        string configPath = Path.Combine(dir, AdapterFolderFiles.ConfigFile), sidecar = Path.Combine(dir, AdapterFolderFiles.SidecarFile);
        var stale = JsonFile.ReadObject(sidecar)["base_fingerprint"]!.DeepClone().AsObject();
        stale["digest"] = new string('0', 64);
        var config = JsonFile.ReadObject(configPath);
        config[BaseFingerprint.LegacyConfigKey] = stale;
        File.WriteAllText(configPath, config.ToJsonString());

        var (code, stdout, err) = Generate(TestPaths.TinyLlama, dir);
        Assert.Equal(1, code);
        Assert.Equal("", stdout.Trim());
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith($"error: {sidecar} and {configPath} record different base models", err);

        // The same fingerprint in both (a legacy folder with a sidecar copied in) is no conflict.
        config[BaseFingerprint.LegacyConfigKey] = JsonFile.ReadObject(sidecar)["base_fingerprint"]!.DeepClone();
        File.WriteAllText(configPath, config.ToJsonString());
        (code, stdout, err) = Generate(TestPaths.TinyLlama, dir);
        Assert.True(code == 0, stdout + err);
    }

    /// <summary>
    /// Training on chat data adds the chat record to the sidecar (no file of its own); a folder saved before, with
    /// peftsharp_chat.json, is still read, and the sidecar's record wins when both are there.
    /// </summary>
    [Fact]
    public void TheChatRecordJoinsTheSidecarAndAnOlderFoldersChatFileIsStillRead()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "chat.jsonl"), ask = Path.Combine(dir, "ask.json");
        var turn = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "code red fox cup ->" });
        File.WriteAllText(data, new JsonObject { ["messages"] = new JsonArray(turn[0]!.DeepClone(), new JsonObject { ["role"] = "assistant", ["content"] = "one" }) }.ToJsonString());
        File.WriteAllText(ask, turn.ToJsonString());
        string run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run("train", "--model", TestPaths.TinyLlama, "--data", data, "--method", "lora", "--steps", "1",
            "--batch", "1", "--max-seq", "128", "--out", run);
        Assert.True(code == 0, stdout + err);
        string final = Path.Combine(run, "final"), sidecar = Path.Combine(final, AdapterFolderFiles.SidecarFile);
        var written = JsonFile.ReadObject(sidecar);
        Assert.Equal(["base_fingerprint", "chat"], written.Select(p => p.Key));
        Assert.Equal("PeftSharp's simple chat format", written["chat"]!["chat_template_source"]!.GetValue<string>());
        Assert.False(File.Exists(Path.Combine(final, "peftsharp_chat.json")));

        // The older layout: the record in peftsharp_chat.json (here one naming another template), none in the sidecar.
        var record = written["chat"]!.DeepClone().AsObject();
        record["chat_template_sha256"] = new string('a', 64);
        record["chat_template_source"] = "other/tokenizer_config.json:chat_template";
        File.WriteAllText(Path.Combine(final, "peftsharp_chat.json"), record.ToJsonString());
        written.Remove("chat");
        File.WriteAllText(sidecar, written.ToJsonString());
        (code, _, err) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", final, "--chat", ask, "--max-new-tokens", "1");
        Assert.Equal(0, code);
        Assert.Contains("was trained with chat template other/tokenizer_config.json:chat_template", err);

        // Both: the sidecar's record (the simple format this base renders with) is the one read.
        written["chat"] = new JsonObject { ["chat_template_sha256"] = null, ["chat_template_source"] = "PeftSharp's simple chat format", ["stop_token_ids"] = new JsonArray() };
        File.WriteAllText(sidecar, written.ToJsonString());
        (code, _, err) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", final, "--chat", ask, "--max-new-tokens", "1");
        Assert.Equal(0, code);
        Assert.DoesNotContain("was trained with", err);
    }
}
