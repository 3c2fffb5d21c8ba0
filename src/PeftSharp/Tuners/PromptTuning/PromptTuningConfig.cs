using System.Text.Json.Nodes;

using PeftSharp.Tuners;

namespace PeftSharp;

public enum PromptInit { Random, SampleVocab, Text }

/// <summary>PEFT's PromptTuningConfig: N virtual token embeddings prepended to every input.</summary>
public sealed record PromptTuningConfig : IPeftConfig
{
    public const string PeftType = "PROMPT_TUNING";
    string IPeftConfig.PeftType => PeftType;

    public int NumVirtualTokens { get; init; } = 20;
    public PromptInit Init { get; init; } = PromptInit.SampleVocab;
    public string? InitText { get; init; }

    public void Validate()
    {
        if (NumVirtualTokens <= 0) throw new ArgumentException($"num_virtual_tokens must be positive (got {NumVirtualTokens})");
        if (Init == PromptInit.Text && string.IsNullOrEmpty(InitText)) throw new ArgumentException("prompt_tuning_init TEXT needs prompt_tuning_init_text");
    }

    static string InitName(PromptInit i) => i switch { PromptInit.Random => "RANDOM", PromptInit.SampleVocab => "SAMPLE_VOCAB", _ => "TEXT" };

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
        ["prompt_tuning_init"] = InitName(Init),
        ["prompt_tuning_init_text"] = InitText,
        ["tokenizer_name_or_path"] = Init == PromptInit.Text ? baseModel : null,
        ["tokenizer_kwargs"] = null,
        ["base_model_name_or_path"] = baseModel,
        ["revision"] = null,
        ["inference_mode"] = true,
    };

    public static PromptTuningConfig FromJson(JsonObject j) => new()
    {
        NumVirtualTokens = j["num_virtual_tokens"]?.GetValue<int>() ?? throw new InvalidDataException("adapter_config.json: missing num_virtual_tokens"),
        Init = (j["prompt_tuning_init"]?.GetValue<string>() ?? "RANDOM") switch
        {
            "TEXT" => PromptInit.Text,
            "SAMPLE_VOCAB" => PromptInit.SampleVocab,
            _ => PromptInit.Random,
        },
        InitText = j["prompt_tuning_init_text"]?.GetValue<string>(),
    };
}
