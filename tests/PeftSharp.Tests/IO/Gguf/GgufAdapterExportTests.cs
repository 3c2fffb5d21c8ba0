using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `peft export gguf-adapter`: llama.cpp running the base GGUF with the adapter GGUF (scale 1) reproduces PEFT's
/// model (our `peft merge` folder) for an rsLoRA adapter with alpha_pattern and rank_pattern, where llama.cpp's
/// Python converter is off; DoRA is refused with the command that does work.
/// </summary>
[Collection("console")]
public class GgufAdapterExportTests(ITestOutputHelper output)
{
    static readonly int[] Prompt = [5, 17, 99, 42, 200, 7, 63, 11];
    static string FixtureLora => Path.Combine(TestPaths.TinyLlama, "adapters", "lora");

    /// <summary>The fixture LoRA (q_proj, v_proj, r 4) made rsLoRA, v_proj at rank 2 (rank_pattern) with alpha 24 (alpha_pattern).</summary>
    static string PatternedAdapter()
    {
        string dir = TestPaths.TempDir();
        var cfg = JsonFile.ReadObject(Path.Combine(FixtureLora, "adapter_config.json"));
        cfg["use_rslora"] = true;
        cfg["rank_pattern"] = new JsonObject { ["v_proj"] = 2 };
        cfg["alpha_pattern"] = new JsonObject { ["v_proj"] = 24 };
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        using var st = new SafeTensorsFile(Path.Combine(FixtureLora, "adapter_model.safetensors"));
        var tensors = st.Tensors.Select(t =>
        {
            var x = st.Load(t.Name);
            if (t.Name.Contains("v_proj.lora_A")) x = x[..2];
            if (t.Name.Contains("v_proj.lora_B")) x = x[.., ..2];
            return (t.Name, x.contiguous());
        }).ToList();
        SafeTensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    [Fact]
    public void RsLoraWithPatterns_LlamaCppReproducesPeft() => AssertLlamaCppReproducesPeft(PatternedAdapter(), expectedAlpha: 0f, vRank: 2);

    [Fact]
    public void PlainLora_LlamaCppReproducesPeft() => AssertLlamaCppReproducesPeft(FixtureLora, expectedAlpha: 4f, vRank: 4);

    void AssertLlamaCppReproducesPeft(string adapter, float expectedAlpha, long vRank)
    {
        string tmp = TestPaths.TempDir(), baseGguf = Path.Combine(tmp, "base.gguf"), loraGguf = Path.Combine(tmp, "lora.gguf"), merged = Path.Combine(tmp, "merged");
        foreach (var args in new[]
        {
            new[] { "export", "gguf", "--model", TestPaths.TinyLlama, "--out", baseGguf, "--type", "f32" },
            ["export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", loraGguf],
            ["merge", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", merged],
        })
        {
            var (code, _, err) = CliCapture.Run(args);
            Assert.True(code == 0, $"{string.Join(' ', args)}: {err}");
        }
        using (var r = new GgufReader(loraGguf))
        {
            Assert.Equal("adapter", r.GetString("general.type"));
            Assert.Equal("lora", r.GetString("adapter.type"));
            // alpha = r makes llama.cpp's alpha/rank factor 1; mixed ranks need 0 (no factor).
            Assert.Equal(expectedAlpha, r.Get("adapter.lora.alpha").Value);
            Assert.Equal(new long[] { vRank, 64 }, r.Tensor("blk.0.attn_v.weight.lora_a").Shape);
        }

        float[] ours;
        using (var model = ModelLoader.Load(merged))
        using (no_grad())
        using (var ids = tensor(Prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0))
        using (var logits = model.Forward(ids, lastOnly: true))
            ours = logits[0, -1].data<float>().ToArray();
        using var withAdapter = new LlamaCpp(baseGguf, lora: loraGguf);
        using var bare = new LlamaCpp(baseGguf);
        double rel = Rel(withAdapter.LastLogits(Prompt), ours), baseRel = Rel(bare.LastLogits(Prompt), ours);
        output.WriteLine($"base + adapter GGUF vs PEFT merged: {rel:E2} relative; base alone: {baseRel:E2}");
        Assert.True(rel < 1e-4, $"llama.cpp with the adapter differs from PEFT by {rel:E2}");
        Assert.True(baseRel > 1e-3, "the adapter made no difference: the test would not see a wrong scale");
    }

    /// <summary>The GGUF keeps the base fingerprint a PeftSharp folder records, from its sidecar or, in an older folder,
    /// from adapter_config.json.</summary>
    [Fact]
    public void TheBaseFingerprintTravelsIntoTheAdapterGgufFromEitherLayout()
    {
        string dir = TestPaths.TempDir(), adapter = Path.Combine(dir, "a");
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            model.AddAdapter("a", new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"] });
            model.SaveAdapter("a", adapter);
        }
        var recorded = JsonFile.ReadObject(Path.Combine(adapter, AdapterFolderFiles.SidecarFile))["base_fingerprint"]!;
        string Exported(string name)
        {
            string gguf = Path.Combine(dir, name);
            var (code, _, err) = CliCapture.Run("export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", gguf);
            Assert.True(code == 0, err);
            using var r = new GgufReader(gguf);
            return JsonNode.Parse(r.GetString("peftsharp.base_fingerprint"))!["digest"]!.GetValue<string>();
        }
        Assert.Equal(recorded["digest"]!.GetValue<string>(), Exported("new.gguf"));

        var config = JsonFile.ReadObject(Path.Combine(adapter, AdapterFolderFiles.ConfigFile));
        config[BaseFingerprint.LegacyConfigKey] = recorded.DeepClone();
        File.WriteAllText(Path.Combine(adapter, AdapterFolderFiles.ConfigFile), config.ToJsonString());
        File.Delete(Path.Combine(adapter, AdapterFolderFiles.SidecarFile));
        Assert.Equal(recorded["digest"]!.GetValue<string>(), Exported("legacy.gguf"));
    }

    [Fact]
    public void DoraIsRefusedNamingTheMergedExport()
    {
        string dora = Path.Combine(TestPaths.TinyLlama, "adapters", "dora");
        string outDir = TestPaths.TempDir();
        var (code, _, err) = CliCapture.Run("export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", dora, "--out", Path.Combine(outDir, "a.gguf"));
        Assert.Equal(1, code);
        Assert.Contains("adapter_config.json: a DoRA adapter has no llama.cpp adapter form; use `peft export gguf --adapter", err);
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }

    [Fact]
    public void PissaIsRefusedNamingTheMergedExport()
    {
        // llama.cpp would add B·A to the original weights, where PiSSA's belongs over the residual base.
        string pissa = Path.Combine(TestPaths.TempDir(), "pissa");
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            model.AddAdapter("p", new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = LoraInit.Pissa });
            model.SaveAdapter("p", pissa);
        }
        string outDir = TestPaths.TempDir();
        var (code, _, err) = CliCapture.Run("export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", pissa, "--out", Path.Combine(outDir, "a.gguf"));
        Assert.Equal(1, code);
        Assert.Contains("adapter_config.json: a PiSSA adapter (init_lora_weights \"pissa\") holds its update over the residual base", err);
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }

    [Fact]
    public void PromptTuningIsRefusedWithoutOutput()
    {
        string prompt = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(prompt, "adapter_config.json"), """{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "task_type": "CAUSAL_LM"}""");
        string outDir = TestPaths.TempDir();
        var (code, _, err) = CliCapture.Run("export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", prompt, "--out", Path.Combine(outDir, "a.gguf"));
        Assert.Equal(1, code);
        Assert.Equal($"error: {Path.Combine(prompt, "adapter_config.json")}: only LoRA adapters have a llama.cpp adapter form (Houlsby adapters and soft prompts do not)", err.Trim());
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }

    /// <summary>llama.cpp renders chat with the base GGUF's tokenizer.chat_template: an adapter trained with another
    /// (recorded by `peft train`, or saved beside it as PEFT and TRL do) gets one warning line; the same template none.</summary>
    [Fact]
    public void AnAdapterTrainedWithAnotherChatTemplateThanTheBaseGgufsIsWarnedAbout()
    {
        const string baseTemplate = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
        const string otherTemplate = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}";
        string baseDir = TestPaths.TempDir();
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json" }) File.Copy(Path.Combine(TestPaths.TinyLlama, f), Path.Combine(baseDir, f));
        File.WriteAllText(Path.Combine(baseDir, "tokenizer_config.json"), new JsonObject { ["chat_template"] = baseTemplate }.ToJsonString());
        string baseGguf = Path.Combine(TestPaths.TempDir(), "base.gguf");
        var (exported, _, exportErr) = CliCapture.Run("export", "gguf", "--model", baseDir, "--out", baseGguf, "--type", "f32");
        Assert.True(exported == 0, exportErr);

        static string Adapter(Action<string> template)
        {
            string dir = TestPaths.TempDir();
            foreach (var f in Directory.GetFiles(FixtureLora)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            template(dir);
            return dir;
        }
        static void Saved(string dir, string template) =>
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject { ["chat_template"] = template }.ToJsonString());
        string[] Warnings(string adapter)
        {
            var (code, _, err) = CliCapture.Run("export", "gguf-adapter", "--model", baseGguf, "--adapter", adapter, "--out", Path.Combine(TestPaths.TempDir(), "a.gguf"));
            Assert.True(code == 0, err);
            return err.Split('\n').Where(l => l.StartsWith("warning:", StringComparison.Ordinal)).ToArray();
        }

        string recorded = Adapter(d => new PeftSharp.Chat.AdapterChatRecord(PeftSharp.Chat.ChatTemplate.HashOf(otherTemplate), "chat.jinja", [2]).Write(d));
        string warning = Assert.Single(Warnings(recorded));
        Assert.Contains($"{recorded} was trained with chat template chat.jinja (sha256 {PeftSharp.Chat.ChatTemplate.HashOf(otherTemplate)[..12]})", warning);
        Assert.Contains($"the base GGUF's tokenizer.chat_template is ", warning);
        Assert.Contains($"(sha256 {PeftSharp.Chat.ChatTemplate.HashOf(baseTemplate)[..12]})", warning);
        string saved = Adapter(d => Saved(d, otherTemplate));
        Assert.Contains($"{saved} was trained with chat template {Path.Combine(saved, "tokenizer_config.json")}:chat_template", Assert.Single(Warnings(saved)));
        Assert.Empty(Warnings(Adapter(d => Saved(d, baseTemplate))));
        Assert.Empty(Warnings(Adapter(d => new PeftSharp.Chat.AdapterChatRecord(PeftSharp.Chat.ChatTemplate.HashOf(baseTemplate), "base", [2]).Write(d))));
        Assert.Empty(Warnings(FixtureLora));   // no template recorded or saved: nothing to compare
    }

    static double Rel(float[] a, float[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - (double)b[i]) * (a[i] - (double)b[i]); den += (double)b[i] * b[i]; }
        return Math.Sqrt(num / den);
    }
}
