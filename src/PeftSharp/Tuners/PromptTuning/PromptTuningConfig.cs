using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

using PeftSharp.IO;
using PeftSharp.Tuners;

namespace PeftSharp;

/// <summary>PEFT's prompt_tuning_init: how the virtual token embeddings start. adapter_config.json spells them as PEFT does.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<PromptInit>))]
public enum PromptInit
{
    /// <summary>"RANDOM": normal random embeddings.</summary>
    [JsonStringEnumMemberName("RANDOM")] Random,
    /// <summary>"SAMPLE_VOCAB": embeddings of tokens drawn from the vocabulary.</summary>
    [JsonStringEnumMemberName("SAMPLE_VOCAB")] SampleVocab,
    /// <summary>"TEXT": the embeddings of <see cref="PromptTuningConfig.InitText"/>'s tokens, repeated to the length.</summary>
    [JsonStringEnumMemberName("TEXT")] Text,
}

/// <summary>Source-generated JSON of the prompt tuning config's choices (PEFT's spellings at the adapter_config.json edge).</summary>
[JsonSerializable(typeof(PromptInit))]
internal sealed partial class PromptTuningJsonContext : JsonSerializerContext;

/// <summary>PEFT's PromptTuningConfig: N virtual token embeddings prepended to every input.</summary>
public sealed record PromptTuningConfig : IPeftConfig
{
    /// <summary>adapter_config.json's peft_type for prompt tuning, as PEFT writes it.</summary>
    public const string PeftType = "PROMPT_TUNING";
    string IPeftConfig.PeftType => PeftType;

    /// <summary>PEFT's num_virtual_tokens: soft-prompt vectors put before every input; default 20.</summary>

    public int NumVirtualTokens { get; init; } = 20;
    /// <summary>PEFT's prompt_tuning_init: how the soft prompt starts (default <see cref="PromptInit.SampleVocab"/>).</summary>
    public PromptInit Init { get; init; } = PromptInit.SampleVocab;
    /// <summary>PEFT's prompt_tuning_init_text: with <see cref="PromptInit.Text"/>, the text whose token embeddings start the prompt.</summary>
    public string? InitText { get; init; }

    /// <summary>Checks the config: at least one virtual token, and init text given exactly when <see cref="Init"/> is Text.</summary>

    /// <exception cref="InvalidDataException">Names the config key and the cause.</exception>

    public void Validate()
    {
        if (NumVirtualTokens <= 0) throw new ArgumentException($"num_virtual_tokens must be positive (got {NumVirtualTokens})");
        if (Init == PromptInit.Text && string.IsNullOrEmpty(InitText)) throw new ArgumentException("prompt_tuning_init TEXT needs prompt_tuning_init_text");
    }

    /// <summary>The keys PEFT's PromptTuningConfig writes, so PEFT loads our folder.</summary>
    public JsonObject ToJson(int hidden, int layers, int heads, string baseModel) => new()
    {
        ["peft_type"] = PeftType,
        ["task_type"] = "CAUSAL_LM",
        ["num_virtual_tokens"] = NumVirtualTokens,
        ["token_dim"] = hidden,
        ["num_transformer_submodules"] = 1,
        ["num_attention_heads"] = heads,
        ["num_layers"] = layers,
        ["prompt_tuning_init"] = JsonSerializer.SerializeToNode(Init, PromptTuningJsonContext.Default.PromptInit),
        ["prompt_tuning_init_text"] = InitText,
        ["tokenizer_name_or_path"] = Init == PromptInit.Text ? baseModel : null,
        ["tokenizer_kwargs"] = null,
        ["base_model_name_or_path"] = baseModel,
        ["revision"] = null,
        ["inference_mode"] = true,
    };

    /// <summary>Reads a PEFT prompt tuning adapter_config.json object (PEFT's spellings; absent keys take PEFT's defaults).</summary>

    public static PromptTuningConfig FromJson(JsonObject j) => FromJson(j, AdapterFolderFiles.ConfigFile);

    /// <inheritdoc cref="FromJson(JsonObject)"/>
    /// <param name="j">The config object.</param>
    /// <param name="source">The file named in errors.</param>
    internal static PromptTuningConfig FromJson(JsonObject j, string source) => new()
    {
        NumVirtualTokens = j["num_virtual_tokens"]?.GetValue<int>() ?? throw new InvalidDataException($"{source}: missing num_virtual_tokens"),
        // PEFT's default RANDOM when absent.
        Init = ConfigChoice.Read(j, "prompt_tuning_init", PromptTuningJsonContext.Default.PromptInit, PromptInit.Random, source),
        InitText = j["prompt_tuning_init_text"]?.GetValue<string>(),
    };
}
