using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PeftSharp.Memory;
using PeftSharp.Tuners;

namespace PeftSharp;

/// <summary>
/// In namespace PeftSharp, as PEFT exports it at the top level (<c>from peft import LoraConfig</c>).
/// Mirror of PEFT's LoraConfig (peft/tuners/lora/config.py) for the fields PeftSharp implements. Serialises to the
/// same adapter_config.json keys, so adapters round-trip between PeftSharp and PEFT.
/// </summary>
public sealed record LoraConfig : PeftSharp.Tuners.IPeftConfig
{
    /// <summary>adapter_config.json's peft_type for LoRA (DoRA and QLoRA too).</summary>
    public const string PeftTypeName = "LORA";
    string PeftSharp.Tuners.IPeftConfig.PeftType => PeftTypeName;

    /// <summary>PEFT's r: the rank of A (r x in) and B (out x r); default 8.</summary>

    public int R { get; init; } = 8;
    /// <summary>PEFT's lora_alpha: the update is scaled by alpha / r (alpha / sqrt(r) with <see cref="UseRslora"/>); default 8.</summary>
    public double LoraAlpha { get; init; } = 8;
    /// <summary>PEFT's lora_dropout: dropout on the LoRA input while training, in [0, 1); default 0.</summary>
    public double LoraDropout { get; init; }
    /// <summary>List form: exact names or ".name" suffixes. Null when <see cref="TargetModulesRegex"/> is used.</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }
    /// <summary>String form: a regex full-matched against module names, or "all-linear".</summary>
    public string? TargetModulesRegex { get; init; }
    /// <summary>PEFT's exclude_modules, list form: modules left without LoRA even when targeted. Null when absent.</summary>
    public IReadOnlyList<string>? ExcludeModules { get; init; }
    /// <summary>PEFT's exclude_modules, string form: a regex full-matched against module names.</summary>
    public string? ExcludeModulesRegex { get; init; }
    /// <summary>PEFT's layers_to_transform: only these decoder layer indices get LoRA (null = all).</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>PEFT's layers_pattern: the module-path segment holding the layer index (e.g. "layers"), used with <see cref="LayersToTransform"/>.</summary>
    public string? LayersPattern { get; init; }
    /// <summary>PEFT's rank_pattern: regex keys (matched as <c>(.*\.)?(key)$</c>) to ranks other than <see cref="R"/>.</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    /// <summary>PEFT's alpha_pattern: regex keys to alphas other than <see cref="LoraAlpha"/>.</summary>
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();
    /// <summary>PEFT's use_rslora: scale by alpha / sqrt(r) instead of alpha / r.</summary>
    public bool UseRslora { get; init; }
    /// <summary>PEFT's use_dora: weight-decomposed LoRA (a learned magnitude per output row over the normalised W + BA).</summary>
    public bool UseDora { get; init; }
    /// <summary>PEFT's init_lora_weights: <see cref="LoraInit.True"/> (Kaiming A, zero B; the default), <see cref="LoraInit.False"/>
    /// (both random, for tests), <see cref="LoraInit.Gaussian"/> or <see cref="LoraInit.Pissa"/>.</summary>
    public LoraInit InitLoraWeights { get; init; } = LoraInit.True;
    /// <summary>
    /// A PiSSA adapter: it replaces the frozen base weights it adapts by their residual (W minus the principal part)
    /// when created or loaded, so it cannot share those weights with another adapter, a server or llama.cpp. The one
    /// spelling of "is this PiSSA" (<c>LoraAdapter.IsPissa</c> asks it of a live adapter).
    /// </summary>
    internal bool IsPissa => InitLoraWeights == LoraInit.Pissa;
    /// <summary>PEFT's bias: which biases train; only <see cref="LoraBias.None"/> is supported (<see cref="Validated"/> refuses the others).</summary>
    public LoraBias Bias { get; init; } = LoraBias.None;
    /// <summary>PEFT's base_model_name_or_path: the base the adapter was trained on, as recorded (informational; the base check uses the fingerprint).</summary>
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>PEFT's revision: the base model's Hub revision, when recorded.</summary>
    public string? Revision { get; init; }
    /// <summary>PEFT's inference_mode: the adapter was saved for inference (PEFT writes true on save).</summary>
    public bool InferenceMode { get; init; }
    /// <summary>PEFT's task_type; PeftSharp trains and loads CAUSAL_LM.</summary>
    public string TaskType { get; init; } = "CAUSAL_LM";

    /// <summary>True when the targets are PEFT's "all-linear" (every linear layer but the LM head).</summary>

    public bool IsAllLinear => TargetModulesRegex == TargetMatcher.AllLinearKeyword;

    /// <summary>The module matcher for these targets, exclusions and layers, as PEFT matches them.</summary>

    public TargetMatcher Matcher()
    {
        var filters = new TargetFilters
        {
            ExcludeModules = ExcludeModules,
            ExcludeRegex = ExcludeModulesRegex,
            LayersToTransform = LayersToTransform,
            LayersPattern = LayersPattern,
        };
        if (TargetModules is { } list) return TargetMatcher.FromNames(list, filters);
        if (TargetModulesRegex is null) throw new InvalidDataException("LoRA config: target_modules is required");
        return IsAllLinear ? TargetMatcher.AllLinear(filters) : TargetMatcher.FromRegex(TargetModulesRegex, filters);
    }

    /// <summary>Rank of one module: the first rank_pattern key matching as PEFT does (`(.*\.)?(key)$`), else r.</summary>
    public int RankFor(string modulePath) => PatternValue(RankPattern, modulePath) ?? R;
    /// <summary>Alpha of one module: the first alpha_pattern key matching as PEFT does, else <see cref="LoraAlpha"/>.</summary>
    public double AlphaFor(string modulePath) => PatternValue(AlphaPattern, modulePath) ?? LoraAlpha;

    /// <summary>The scale of one module's update: alpha / r, or alpha / sqrt(r) with rsLoRA, from its pattern-resolved rank and alpha.</summary>

    public double ScalingFor(string modulePath)
    {
        int r = RankFor(modulePath);
        double a = AlphaFor(modulePath);
        return UseRslora ? a / Math.Sqrt(r) : a / r;
    }

    static T? PatternValue<T>(IReadOnlyDictionary<string, T> patterns, string name) where T : struct
    {
        foreach (var (key, v) in patterns)
            if (Regex.IsMatch(name, $@"^(.*\.)?({key})$")) return v;
        return null;
    }

    /// <summary>Every key PEFT's LoraConfig writes are known; anything else is reported and ignored.</summary>
    static readonly HashSet<string> KnownKeys =
    [
        "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "layers_to_transform",
        "layers_pattern", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "init_lora_weights", "bias", "modules_to_save",
        "fan_in_fan_out", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "loftq_config", "megatron_config",
        "megatron_core", "layer_replication", "eva_config", "corda_config", "lora_bias", "use_qalora", "qalora_group_size",
        "trainable_token_indices", "target_parameters", "peft_version", "runtime_config", "ensure_weight_tying", "alora_invocation_tokens",
        "arrow_config",
    ];

    /// <summary>Reads a PEFT adapter_config.json object (unknown keys are reported through <paramref name="warn"/> and ignored).</summary>

    /// <param name="o">The parsed adapter_config.json.</param>

    /// <param name="source">The file, named in errors.</param>

    /// <param name="warn">Receives one line per ignored key; null ignores silently.</param>

    /// <exception cref="InvalidDataException">A key with a wrong type or an unsupported value, naming the file and the key.</exception>

    public static LoraConfig FromJson(JsonObject o, string source, Action<string>? warn = null)
    {
        string Where(string k) => $"{source}: '{k}'";
        // A scalar key's value, or an error naming the key and what it takes (GetValue's own message names neither).
        T Value<T>(string k, T fallback)
        {
            try { return o[k] is { } n ? n.GetValue<T>() : fallback; }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                string kind = typeof(T) == typeof(int) ? "an integer" : typeof(T) == typeof(double) ? "a number" : typeof(T) == typeof(bool) ? "true or false" : "a string";
                throw new InvalidDataException($"{Where(k)} must be {kind}, got {Shorten(o[k]!.ToJsonString())}");
            }
        }
        try
        {
            // Newer PEFT releases write every option of their LoraConfig; one left at null/false/empty changes nothing.
            foreach (var (k, v) in o.Where(p => !KnownKeys.Contains(p.Key) && !p.Key.StartsWith("peftsharp_", StringComparison.Ordinal) && !IsUnset(p.Value)))
                warn?.Invoke($"{source}: unknown key '{k}' = {Shorten(v!.ToJsonString())} ignored (written by a newer PEFT release?)");
            string peftType = o["peft_type"]?.GetValue<string>() ?? throw MissingPeftType(source);
            if (peftType != "LORA") throw new InvalidDataException($"{Where("peft_type")} is '{peftType}', expected LORA");
            RequireOff(o, "fan_in_fan_out", source);
            RequireOff(o, "lora_bias", source);
            RequireOff(o, "use_qalora", source);
            RequireNullOrEmpty(o, "layer_replication", source);
            RequireNullOrEmpty(o, "modules_to_save", source);
            RequireNullOrEmpty(o, "trainable_token_indices", source);
            RequireNullOrEmpty(o, "target_parameters", source);

            var (targets, targetRegex) = ListOrString(o["target_modules"]);
            var (exclude, excludeRegex) = ListOrString(o["exclude_modules"]);
            return new LoraConfig
            {
                R = Value("r", 8),
                LoraAlpha = Value("lora_alpha", 8.0),
                LoraDropout = Value("lora_dropout", 0.0),
                TargetModules = targets,
                TargetModulesRegex = targetRegex,
                ExcludeModules = exclude,
                ExcludeModulesRegex = excludeRegex,
                LayersToTransform = o["layers_to_transform"] switch
                {
                    null => null,
                    JsonArray a => a.Select(x => x!.GetValue<int>()).ToList(),
                    JsonNode n => [n.GetValue<int>()],
                },
                LayersPattern = o["layers_pattern"] switch
                {
                    null => null,
                    JsonArray { Count: 0 } => null,
                    JsonArray { Count: 1 } a => a[0]!.GetValue<string>(),
                    JsonArray => throw new InvalidDataException($"{Where("layers_pattern")}: only one pattern is supported"),
                    JsonNode n => n.GetValue<string>(),
                },
                RankPattern = (o["rank_pattern"] as JsonObject)?.ToDictionary(p => p.Key, p => p.Value!.GetValue<int>()) ?? new Dictionary<string, int>(),
                AlphaPattern = (o["alpha_pattern"] as JsonObject)?.ToDictionary(p => p.Key, p => p.Value!.GetValue<double>()) ?? new Dictionary<string, double>(),
                UseRslora = Value("use_rslora", false),
                UseDora = Value("use_dora", false),
                InitLoraWeights = ConfigChoice.Read(o, "init_lora_weights", LoraJsonContext.Default.LoraInit, LoraInit.True, source),
                Bias = ConfigChoice.Read(o, "bias", LoraJsonContext.Default.LoraBias, LoraBias.None, source),
                BaseModelNameOrPath = o["base_model_name_or_path"]?.GetValue<string>(),
                Revision = o["revision"]?.GetValue<string>(),
                InferenceMode = Value("inference_mode", false),
                TaskType = Value("task_type", "CAUSAL_LM"),
            }.Validated(source);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or JsonException)
        {
            throw new InvalidDataException($"{source}: malformed LoRA config ({e.Message})");
        }
    }

    /// <summary>This config, checked: r and alpha positive, dropout in [0, 1), a finite scale, supported choices.</summary>

    /// <param name="source">The file or caller named in errors.</param>

    /// <exception cref="InvalidDataException">Names <paramref name="source"/> and the config key ('r' must be positive, ...).</exception>

    public LoraConfig Validated(string source)
    {
        if (R <= 0) throw new InvalidDataException($"{source}: 'r' must be positive, got {R}");
        if (LoraDropout is < 0 or >= 1 || double.IsNaN(LoraDropout)) throw new InvalidDataException($"{source}: 'lora_dropout' must be in [0, 1), got {LoraDropout}");
        if (TargetModules is null && TargetModulesRegex is null) throw new InvalidDataException($"{source}: 'target_modules' is required");
        if (!Enum.IsDefined(InitLoraWeights))
            throw new InvalidDataException($"{source}: 'init_lora_weights' '{InitLoraWeights}' is not supported ({LoraInitNames.Choices})");
        if (Bias != LoraBias.None)
            throw new InvalidDataException($"{source}: 'bias' '{JsonSerializer.Serialize(Bias, LoraJsonContext.Default.LoraBias).Trim('"')}' is not supported (none: PeftSharp trains no biases)");
        foreach (var (k, v) in RankPattern)
            if (v <= 0) throw new InvalidDataException($"{source}: rank_pattern '{k}' must be positive, got {v}");
        CheckAlpha(source, "'lora_alpha'", LoraAlpha, R);
        foreach (var (k, v) in AlphaPattern) CheckAlpha(source, $"alpha_pattern '{k}'", v, PatternValue(RankPattern, k) ?? R);
        return this;
    }

    /// <summary>
    /// The scaling alpha/r (alpha/sqrt(r) with rsLoRA) multiplies every LoRA output: it must be a finite number that
    /// fits the float32 adapter maths, or every output becomes Inf/NaN (lora_alpha 1e308 gives 1.25e307 at r=8).
    /// </summary>
    void CheckAlpha(string source, string what, double alpha, int r)
    {
        if (!double.IsFinite(alpha)) throw new InvalidDataException($"{source}: {what} must be a finite number, got {alpha}");
        double scaling = UseRslora ? alpha / Math.Sqrt(r) : alpha / r;
        if (Math.Abs(scaling) > MaxScaling)
            throw new InvalidDataException($"{source}: {what} {alpha:g6} gives a scaling of {scaling:g6} (alpha/{(UseRslora ? "sqrt(r)" : "r")} with r={r}), above the limit of {MaxScaling:g1} (LoRA outputs would overflow)");
    }

    /// <summary>Largest |alpha/r| accepted: far above any real adapter's (1-64), far below float32's 3.4e38 so B·A·s stays finite.</summary>
    public const double MaxScaling = 1e6;

    /// <summary>adapter_config.json content with every key PEFT's LoraConfig has (sorted, as PEFT writes it).</summary>
    public JsonObject ToJson()
    {
        JsonNode? Strings(IReadOnlyList<string>? l, string? s) => l is not null ? new JsonArray(l.Order(StringComparer.Ordinal).Select(x => (JsonNode?)x).ToArray()) : s;
        var o = new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(AlphaPattern.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["bias"] = JsonSerializer.SerializeToNode(Bias, LoraJsonContext.Default.LoraBias),
            ["corda_config"] = null,
            ["eva_config"] = null,
            ["exclude_modules"] = Strings(ExcludeModules, ExcludeModulesRegex),
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = InferenceMode,
            ["init_lora_weights"] = JsonSerializer.SerializeToNode(InitLoraWeights, LoraJsonContext.Default.LoraInit),
            ["layer_replication"] = null,
            ["layers_pattern"] = LayersPattern,
            ["layers_to_transform"] = LayersToTransform is null ? null : new JsonArray(LayersToTransform.Select(i => (JsonNode?)i).ToArray()),
            ["loftq_config"] = new JsonObject(),
            ["lora_alpha"] = LoraAlpha == Math.Floor(LoraAlpha) ? (JsonNode)(long)LoraAlpha : LoraAlpha,
            ["lora_bias"] = false,
            ["lora_dropout"] = LoraDropout,
            ["megatron_config"] = null,
            ["megatron_core"] = "megatron.core",
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = R,
            ["rank_pattern"] = new JsonObject(RankPattern.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            ["revision"] = Revision,
            ["target_modules"] = Strings(TargetModules, TargetModulesRegex),
            ["task_type"] = TaskType,
            ["trainable_token_indices"] = null,
            ["use_dora"] = UseDora,
            ["use_rslora"] = UseRslora,
        };
        return o;
    }

    static (IReadOnlyList<string>? List, string? Text) ListOrString(JsonNode? n) => n switch
    {
        null => (null, null),
        JsonArray a => (a.Select(x => x!.GetValue<string>()).ToList(), null),
        JsonNode s => (null, s.GetValue<string>()),
    };

    /// <summary>
    /// PEFT refuses an adapter_config.json without 'peft_type' (PeftConfig._get_peft_type reads loaded_attributes["peft_type"],
    /// a KeyError when absent), so PeftSharp does too rather than guessing LoRA.
    /// </summary>
    public static InvalidDataException MissingPeftType(string source) =>
        new($"{source}: 'peft_type' is missing (PEFT refuses such a config too); a LoRA adapter has \"peft_type\": \"LORA\"");

    static bool IsUnset(JsonNode? v) => v switch
    {
        null => true,
        JsonValue b when b.GetValueKind() == JsonValueKind.False => true,
        JsonObject { Count: 0 } or JsonArray { Count: 0 } => true,
        _ => false,
    };

    static string Shorten(string s) => s.Length > 60 ? s[..60] + "..." : s;

    static void RequireOff(JsonObject o, string key, string source)
    {
        if (o[key] is JsonValue v && v.GetValueKind() == JsonValueKind.True)
            throw new InvalidDataException($"{source}: '{key}' = true is not supported by PeftSharp");
    }

    static void RequireNullOrEmpty(JsonObject o, string key, string source)
    {
        if (o[key] is JsonArray { Count: > 0 } or JsonObject { Count: > 0 } or JsonValue)
            throw new InvalidDataException($"{source}: '{key}' is set ({o[key]!.ToJsonString()}); not supported by PeftSharp");
    }
}
