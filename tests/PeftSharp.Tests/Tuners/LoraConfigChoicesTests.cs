using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Memory;
using PeftSharp.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// Issue 13 item 2: the config choices are enums, with PEFT's spellings only at the JSON edge (init_lora_weights a JSON
/// boolean for true/false, a string otherwise; bias a string), so files stay byte-compatible with PEFT's.
/// </summary>
public class LoraConfigChoicesTests(ITestOutputHelper output)
{
    /// <summary>Every real PEFT adapter_config.json in the shared fixtures: read, written back, the choice keys exactly as PEFT wrote them.</summary>
    [Fact]
    public void RealPeftConfigsKeepTheirChoiceSpellingsThroughARoundTrip()
    {
        if (RealFixtures.Folder("", output) is not { } root) return;
        var files = Directory.GetFiles(root, "*adapter_config.json", SearchOption.AllDirectories)
            .Where(f => JsonFile.ReadObject(f)["peft_type"]?.GetValue<string>() == "LORA").ToList();
        Assert.True(files.Count >= 4, $"expected the real PEFT LoRA configs, found {files.Count}");
        foreach (var f in files)
        {
            var original = JsonFile.ReadObject(f);
            var config = LoraConfig.FromJson(original, f);
            Assert.Equal(LoraInit.True, config.InitLoraWeights);
            Assert.Equal(LoraBias.None, config.Bias);
            var written = config.ToJson();
            foreach (var key in new[] { "init_lora_weights", "bias" })
                Assert.True(JsonNode.DeepEquals(original[key], written[key]), $"{f}: '{key}' {original[key]?.ToJsonString()} written as {written[key]?.ToJsonString()}");
            Assert.Equal(config, LoraConfig.FromJson(JsonNode.Parse(written.ToJsonString())!.AsObject(), "written") with { RankPattern = config.RankPattern, AlphaPattern = config.AlphaPattern, TargetModules = config.TargetModules, ExcludeModules = config.ExcludeModules, LayersToTransform = config.LayersToTransform });
        }
    }

    [Theory]
    [InlineData(LoraInit.True, "true")]
    [InlineData(LoraInit.False, "false")]
    [InlineData(LoraInit.Gaussian, "\"gaussian\"")]
    [InlineData(LoraInit.Pissa, "\"pissa\"")]
    public void InitLoraWeightsIsWrittenAsPeftWritesItAndReadBack(LoraInit init, string json)
    {
        var written = new LoraConfig { TargetModules = ["q_proj"], InitLoraWeights = init }.ToJson();
        Assert.Equal(json, written["init_lora_weights"]!.ToJsonString());
        Assert.Equal("\"none\"", written["bias"]!.ToJsonString());
        Assert.Equal(init, LoraConfig.FromJson(JsonNode.Parse(written.ToJsonString())!.AsObject(), "cfg").InitLoraWeights);
    }

    [Theory]
    [InlineData("\"x\"", "cfg: 'init_lora_weights' 'x' is not supported (true, false, gaussian, pissa)")]
    [InlineData("\"True\"", "cfg: 'init_lora_weights' 'True' is not supported (true, false, gaussian, pissa)")]
    [InlineData("\"olora\"", "cfg: 'init_lora_weights' 'olora' is not supported (true, false, gaussian, pissa)")]
    [InlineData("3", "cfg: 'init_lora_weights' 3 is not supported (true, false, gaussian, pissa)")]
    public void AnUnknownInitIsRefusedNamingKeyValueAndChoices(string value, string message)
    {
        var o = JsonNode.Parse($$"""{"peft_type":"LORA","r":4,"target_modules":["q_proj"],"init_lora_weights":{{value}}}""")!.AsObject();
        Assert.Equal(message, Assert.Throws<InvalidDataException>(() => LoraConfig.FromJson(o, "cfg")).Message);
    }

    [Theory]
    [InlineData("all", "cfg: 'bias' 'all' is not supported (none: PeftSharp trains no biases)")]
    [InlineData("lora_only", "cfg: 'bias' 'lora_only' is not supported (none: PeftSharp trains no biases)")]
    [InlineData("some", "cfg: 'bias' 'some' is not supported (none, all, lora_only)")]
    public void ABiasOtherThanNoneIsRefusedNamingIt(string bias, string message)
    {
        var o = JsonNode.Parse($$"""{"peft_type":"LORA","r":4,"target_modules":["q_proj"],"bias":"{{bias}}"}""")!.AsObject();
        Assert.Equal(message, Assert.Throws<InvalidDataException>(() => LoraConfig.FromJson(o, "cfg")).Message);
    }

    /// <summary>
    /// Only PEFT's exact spellings are read (PEFT compares the strings: "NONE" is not "none"). System.Text.Json's enum
    /// converter alone would also take a JSON number or a numeric string as a value ("prompt_tuning_init": 2 read as
    /// TEXT, "bias": 0 as none, 7 as no value at all); each is refused like any unknown value (as another case is).
    /// </summary>
    [Theory]
    [InlineData("bias", "0", "cfg: 'bias' 0 is not supported (none, all, lora_only)")]
    [InlineData("bias", "7", "cfg: 'bias' 7 is not supported (none, all, lora_only)")]
    [InlineData("bias", "\"0\"", "cfg: 'bias' '0' is not supported (none, all, lora_only)")]
    [InlineData("bias", "\"NONE\"", "cfg: 'bias' 'NONE' is not supported (none, all, lora_only)")]
    [InlineData("prompt_tuning_init", "2", "cfg: 'prompt_tuning_init' 2 is not supported (RANDOM, SAMPLE_VOCAB, TEXT)")]
    [InlineData("prompt_tuning_init", "\"random\"", "cfg: 'prompt_tuning_init' 'random' is not supported (RANDOM, SAMPLE_VOCAB, TEXT)")]
    public void OnlyPeftsExactSpellingsAreRead(string key, string value, string message)
    {
        var o = JsonNode.Parse($$"""{"peft_type":"LORA","r":4,"target_modules":["q_proj"],"num_virtual_tokens":4,"{{key}}":{{value}}}""")!.AsObject();
        var e = Assert.Throws<InvalidDataException>(() =>
        {
            if (key == "bias") LoraConfig.FromJson(o, "cfg");
            else PromptTuningConfig.FromJson(o, "cfg");
        });
        Assert.Equal(message, e.Message);
    }

    /// <summary>run.json as the trainer writes it (its source-generated context): the optimiser and dtype in the CLI's spellings.</summary>
    [Fact]
    public void RunFileSpellsTheOptimizerDtypeAndScheduleAsTheCliDoes()
    {
        var o = new TrainerOptions { Optimizer = OptimizerKind.PagedAdamW8bit, ComputeDtype = ScalarType.BFloat16, Schedule = LrScheduleKind.Linear, Device = "cuda:1" };
        var json = JsonNode.Parse(JsonSerializer.Serialize(o, TrainingJsonContext.Default.TrainerOptions))!.AsObject();
        Assert.Equal("paged-adamw-8bit", json["optimizer"]!.GetValue<string>());
        Assert.Equal("bf16", json["compute_dtype"]!.GetValue<string>());
        Assert.Equal("linear", json["schedule"]!.GetValue<string>());
        Assert.Equal("cuda:1", json["device"]!.GetValue<string>());
        Assert.False(json.ContainsKey("device_kind"));
        Assert.Equal(DeviceKind.Cuda, o.DeviceKind);
        Assert.Equal(o, JsonSerializer.Deserialize(json.ToJsonString(), TrainingJsonContext.Default.TrainerOptions));
    }

    [Theory]
    [InlineData(PromptInit.Random, "RANDOM")]
    [InlineData(PromptInit.SampleVocab, "SAMPLE_VOCAB")]
    [InlineData(PromptInit.Text, "TEXT")]
    public void PromptTuningInitIsSpelledAsPeftSpellsIt(PromptInit init, string peft)
    {
        var written = new PromptTuningConfig { Init = init, InitText = "hi" }.ToJson(64, 2, 4, "base");
        Assert.Equal(peft, written["prompt_tuning_init"]!.GetValue<string>());
        Assert.Equal(init, PromptTuningConfig.FromJson(JsonNode.Parse(written.ToJsonString())!.AsObject()).Init);
        written["prompt_tuning_init"] = "sample_vocab";
        Assert.Equal("adapter_config.json: 'prompt_tuning_init' 'sample_vocab' is not supported (RANDOM, SAMPLE_VOCAB, TEXT)",
            Assert.Throws<InvalidDataException>(() => PromptTuningConfig.FromJson(JsonNode.Parse(written.ToJsonString())!.AsObject())).Message);
    }

    /// <summary>The error's allowed values come from the converters, so they are the spellings the files use (and the CLI's --init list).</summary>
    [Fact]
    public void TheAllowedValuesAreTheConvertersSpellings()
    {
        Assert.Equal(LoraInitNames.Choices, PeftSharp.Tuners.ConfigChoice.Spellings(LoraJsonContext.Default.LoraInit));
        Assert.Equal("none, all, lora_only", PeftSharp.Tuners.ConfigChoice.Spellings(LoraJsonContext.Default.LoraBias));
        Assert.Equal("RANDOM, SAMPLE_VOCAB, TEXT", PeftSharp.Tuners.ConfigChoice.Spellings(PromptTuningJsonContext.Default.PromptInit));
    }
}
