using PeftSharp.Tuners.Houlsby;

namespace PeftSharp.Training.Methods;

/// <summary>The tuning method of a run and its knobs (the LoRA ones mirror PEFT's LoraConfig).</summary>
public sealed record MethodOptions
{
    /// <summary>The values <see cref="Method"/> accepts.</summary>
    public static readonly string[] Names = ["full", "lora", "dora", "qlora", "qdora", "adapter", "prompt"];

    /// <summary>
    /// One of <see cref="Names"/>. A name, not an enum: the methods are the open registry's (<c>Tuners/PeftMethods.All</c>,
    /// keyed by <c>peft_type</c>) plus "full" and the LoRA variants, so a new method is one folder and one registration
    /// line, not an enum member in a third place; <see cref="Validate"/> checks it at the edge, naming the key.
    /// </summary>
    public string Method { get; init; } = "qlora";
    /// <summary>LoRA rank r (PEFT's 'r'), &gt; 0; default 8.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>LoRA alpha ('lora_alpha'), &gt; 0: the update is scaled by alpha / r (alpha / sqrt(r) with <see cref="UseRslora"/>); default 16.</summary>
    public double Alpha { get; init; } = 16;
    /// <summary>Dropout on the LoRA input during training ('lora_dropout'), in [0, 1); default 0.</summary>
    public double Dropout { get; init; }
    /// <summary>Comma list, "all-linear", or "regex:PATTERN" (as `plan --targets`).</summary>
    public string Targets { get; init; } = "all-linear";
    /// <summary>PEFT's exclude_modules: a comma list of module names left without LoRA even when <see cref="Targets"/> matches them; null = none.</summary>
    public string? Exclude { get; init; }
    /// <summary>Rank-stabilised LoRA ('use_rslora'): scale alpha / sqrt(r) instead of alpha / r.</summary>
    public bool UseRslora { get; init; }
    /// <summary>PEFT's rank_pattern: regex keys (matched as `(.*\.)?(key)$` against module names) to ranks other than <see cref="Rank"/>.</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    /// <summary>PEFT's alpha_pattern: regex keys to alphas other than <see cref="Alpha"/>.</summary>
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();
    /// <summary>PEFT's layers_to_transform: only these decoder layers get LoRA (null = all).</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>PEFT's init_lora_weights of a fresh LoRA adapter (default <see cref="LoraInit.True"/>: zero B).</summary>
    public LoraInit Init { get; init; } = LoraInit.True;
    /// <summary>Houlsby adapters ('reduction_factor'): the bottleneck is the hidden size divided by this; default 16.</summary>
    public int ReductionFactor { get; init; } = 16;
    /// <summary>Houlsby adapters' activation between the down and up projections (relu, gelu, ...); default relu.</summary>
    public string NonLinearity { get; init; } = "relu";
    /// <summary>Prompt tuning ('num_virtual_tokens'): soft-prompt vectors put before the input; default 20.</summary>
    public int VirtualTokens { get; init; } = 20;
    /// <summary>PEFT's prompt_tuning_init of a prompt tuning run (default <see cref="PeftSharp.PromptInit.SampleVocab"/>).</summary>
    public PromptInit PromptInit { get; init; } = PromptInit.SampleVocab;
    /// <summary>Prompt tuning with <see cref="PromptInit"/> Text: the text whose token embeddings start the soft prompt.</summary>
    public string? PromptInitText { get; init; }
    /// <summary>qlora / qdora: weights per NF4 quantisation block (bitsandbytes' blocksize); default 64.</summary>
    public int BlockSize { get; init; } = 64;
    /// <summary>qlora / qdora: quantise the blocks' scales too (bitsandbytes' double quantisation); default true.</summary>
    public bool DoubleQuant { get; init; } = true;
    /// <summary>True for the methods that quantise the base to 4 bits (qlora, qdora).</summary>
    public bool IsQuantized => Method is "qlora" or "qdora";
    /// <summary>True for the LoRA family (see <see cref="IsLoraMethod"/>).</summary>
    public bool IsLora => IsLoraMethod(Method);
    /// <summary>The LoRA family (lora, dora, qlora, qdora): the methods with a rank and target modules.</summary>
    public static bool IsLoraMethod(string method) => method is "lora" or "dora" or "qlora" or "qdora";
    /// <summary>The Houlsby adapters of an "adapter" run (bottleneck = hidden / <see cref="ReductionFactor"/>).</summary>
    internal HoulsbyConfig Houlsby => new() { ReductionFactor = ReductionFactor, NonLinearity = NonLinearity };

    /// <summary>Errors name the config key (PEFT's name where PEFT has one); the CLI maps keys to its flags (<see cref="FlagOf"/>).</summary>
    public void Validate()
    {
        if (!Names.Contains(Method)) throw new ArgumentException($"'method': '{Method}' is not one of {string.Join(", ", Names)}");
        if (Rank <= 0) throw new ArgumentException($"'r' must be positive (got {Rank})");
        if (Alpha <= 0) throw new ArgumentException($"'lora_alpha' must be positive (got {Alpha})");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"'lora_dropout' must be in [0, 1) (got {Dropout})");
        if (VirtualTokens <= 0) throw new ArgumentException($"'num_virtual_tokens' must be positive (got {VirtualTokens})");
        if (ReductionFactor <= 0) throw new ArgumentException($"'reduction_factor' must be positive (got {ReductionFactor})");
        foreach (var (k, v) in RankPattern)
            if (v <= 0) throw new ArgumentException($"'rank_pattern' '{k}' must be positive (got {v})");
        foreach (var (k, v) in AlphaPattern)
            if (!(v > 0) || !double.IsFinite(v)) throw new ArgumentException($"'alpha_pattern' '{k}' must be positive (got {v})");
        if (LayersToTransform?.FirstOrDefault(l => l < 0) is int bad and < 0) throw new ArgumentException($"'layers_to_transform' must be layer indices >= 0 (got {bad})");
    }

    /// <summary>The config keys <see cref="Validate"/> names, with the `peft train` flag that sets each.</summary>
    internal static readonly IReadOnlyDictionary<string, string> FlagOf = new Dictionary<string, string>
    {
        ["method"] = "--method", ["r"] = "--rank", ["lora_alpha"] = "--alpha", ["lora_dropout"] = "--dropout",
        ["num_virtual_tokens"] = "--virtual-tokens", ["reduction_factor"] = "--reduction-factor",
        ["rank_pattern"] = "--rank-pattern", ["alpha_pattern"] = "--alpha-pattern", ["layers_to_transform"] = "--layers",
    };
}
