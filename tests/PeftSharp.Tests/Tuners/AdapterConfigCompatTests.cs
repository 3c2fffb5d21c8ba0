using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Tuners;

/// <summary>Issue 16 item 15: adapter_config.json without peft_type (refused, as PEFT does) and keys from newer PEFT releases.</summary>
[Collection("console")]
public class AdapterConfigCompatTests
{
    static string RealConfigs => Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "..", "shared", "fixtures", "real", "adapter-configs-only");

    [Fact]
    public void ConfigWithoutPeftTypeIsRefusedNamingTheKey()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "lora");
        PeftAdapterIOTests.CopyFixture("lora", dir);
        string config = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        var json = JsonFile.ReadObject(config);
        Assert.True(json.Remove("peft_type"));
        File.WriteAllText(config, json.ToJsonString());

        var e = Assert.Throws<InvalidDataException>(() => PeftAdapterIO.Read(dir));
        Assert.StartsWith($"{config}: 'peft_type' is missing", e.Message);
        var (code, _, stderr) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", dir, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.StartsWith($"error: {config}: 'peft_type' is missing", stderr);
    }

    [Fact]
    public void UnknownKeysFromNewerPeftAreQuietWhenUnsetAndWarnWhenSet()
    {
        string dir = Path.GetFullPath(RealConfigs);
        if (!Directory.Exists(dir)) { Console.WriteLine($"skipped: {dir} not found (shared fixtures absent)"); return; }
        var files = Directory.GetFiles(dir, "*.adapter_config.json");
        Assert.NotEmpty(files);
        foreach (var f in files)
        {
            var warnings = new List<string>();
            LoraConfig.FromJson(JsonFile.ReadObject(f), f, warnings.Add);
            Assert.True(warnings.Count == 0, $"{f}: {string.Join("; ", warnings)}");
        }

        // The same keys set to something PeftSharp would ignore: each one warns, naming key and value.
        var json = JsonFile.ReadObject(files.Single(f => f.Contains("peft0.21.0")));
        Assert.True(json.ContainsKey("lora_ga_config") && json.ContainsKey("use_bdlora"));
        json["lora_ga_config"] = new JsonObject { ["direction"] = "ArB2r" };
        json["use_bdlora"] = true;
        json["kasa_config"] = new JsonArray();   // empty: still unset
        var set = new List<string>();
        LoraConfig.FromJson(json, "cfg", set.Add);
        Assert.Equal(2, set.Count);
        Assert.Contains(set, w => w.StartsWith("cfg: unknown key 'lora_ga_config' = {\"direction\":\"ArB2r\"} ignored"));
        Assert.Contains(set, w => w.StartsWith("cfg: unknown key 'use_bdlora' = true ignored"));
    }
}
