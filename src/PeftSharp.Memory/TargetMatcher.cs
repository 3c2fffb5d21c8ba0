using System.Text.RegularExpressions;

namespace PeftSharp.Memory;

/// <summary>
/// PEFT's rules for which modules get an adapter (peft/tuners/tuners_utils.py, check_target_module_exists):
/// a list matches a module whose full name equals an entry or ends with "." + entry; a string is a regex that must
/// match the full name; "all-linear" takes every Linear except the output head. exclude_modules wins over targets.
/// layers_to_transform keeps list matches whose layer index (the number after "layers"/"h"/... ) is listed.
/// </summary>
public sealed class TargetMatcher
{
    /// <summary>PEFT's <c>target_modules="all-linear"</c>: every Linear except the output head.</summary>
    public const string AllLinearKeyword = "all-linear";

    readonly IReadOnlyList<string>? _names;
    readonly Regex? _regex;
    readonly bool _allLinear;
    readonly IReadOnlyList<string> _exclude;
    readonly Regex? _excludeRegex;
    readonly HashSet<int>? _layers;
    readonly Regex _layerIndex;
    readonly string _outputHead;

    TargetMatcher(IReadOnlyList<string>? names, string? regex, bool allLinear, TargetFilters? filters)
    {
        filters ??= new TargetFilters();
        _names = names;
        _regex = regex is null ? null : FullMatch(regex, "target_modules");
        _allLinear = allLinear;
        _exclude = filters.ExcludeModules ?? [];
        _excludeRegex = filters.ExcludeRegex is null ? null : FullMatch(filters.ExcludeRegex, "exclude_modules");
        _layers = filters.LayersToTransform is { Count: > 0 } l ? [.. l] : null;
        // PEFT's LoraConfig refuses layers_to_transform with any string target_modules, all-linear included.
        if (_layers is not null && (regex is not null || allLinear))
            throw new PlanException("layers_to_transform", $"cannot be combined with a {(allLinear ? "'all-linear'" : "regex")} target_modules (PEFT rejects it too); list the module names");
        // PEFT without layers_pattern: the first number after any dotted component followed by a dot.
        _layerIndex = new Regex(filters.LayersPattern is null ? @"^.*\.[^.]*\.(\d+)\." : $@"^.*\.{Regex.Escape(filters.LayersPattern)}\.(\d+)\.");
        _outputHead = filters.OutputHeadName;
    }

    /// <summary>A list of module names (PEFT's list <c>target_modules</c>): a module matches when its full name equals an
    /// entry or ends with "." + entry.</summary>
    /// <param name="names">Entries such as <c>q_proj</c>, <c>v_proj</c>; blanks are dropped.</param>
    /// <param name="filters">Exclusions and layer selection; null = none.</param>
    /// <exception cref="PlanException">The list is empty (<c>target_modules</c>), or <c>layers_to_transform</c> is
    /// combined with a regex or all-linear.</exception>
    public static TargetMatcher FromNames(IEnumerable<string> names, TargetFilters? filters = null)
    {
        var list = names.Select(n => n.Trim()).Where(n => n.Length > 0).ToList();
        if (list.Count == 0) throw new PlanException("target_modules", "the list is empty");
        return new(list, null, false, filters);
    }

    /// <summary>A regex matched against the whole module name (PEFT's string <c>target_modules</c>).</summary>
    /// <param name="pattern">.NET regex syntax, anchored at both ends.</param>
    /// <param name="filters">Exclusions; null = none.</param>
    /// <exception cref="PlanException">An invalid regex (<c>target_modules</c>), or <c>layers_to_transform</c> given.</exception>
    public static TargetMatcher FromRegex(string pattern, TargetFilters? filters = null) => new(null, pattern, false, filters);

    /// <summary>Every Linear module except the output head (<see cref="AllLinearKeyword"/>).</summary>
    /// <param name="filters">Exclusions and the output head's name; null = none, head <c>lm_head</c>.</param>
    /// <exception cref="PlanException"><c>layers_to_transform</c> given (PEFT rejects it with all-linear too).</exception>
    public static TargetMatcher AllLinear(TargetFilters? filters = null) => new(null, null, true, filters);

    /// <summary>PEFT's default LoRA targets per model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING):
    /// <c>c_attn</c> for gpt2, <c>qkv_proj</c> for phi3, else <c>q_proj</c> and <c>v_proj</c>.</summary>
    /// <param name="modelType">config.json's <c>model_type</c>.</param>
    public static TargetMatcher DefaultFor(string modelType) => modelType switch
    {
        "gpt2" => FromNames([ModuleNames.Gpt2.CAttn]),
        "phi3" => FromNames([ModuleNames.Phi3.QkvProj]),
        _ => FromNames([ModuleNames.Llama.QProj, ModuleNames.Llama.VProj]),
    };

    /// <summary>The text form `peft plan --targets` takes: "all-linear", "regex:PATTERN", or a comma-separated list of names.</summary>
    /// <param name="spec">The text.</param>
    /// <param name="filters">Exclusions and layer selection; null = none.</param>
    /// <exception cref="PlanException">As <see cref="FromNames"/> and <see cref="FromRegex"/>.</exception>
    public static TargetMatcher Parse(string spec, TargetFilters? filters = null) =>
        spec.Trim() == AllLinearKeyword ? AllLinear(filters)
        : spec.StartsWith("regex:", StringComparison.Ordinal) ? FromRegex(spec["regex:".Length..], filters)
        : FromNames(spec.Split(','), filters);

    /// <summary>Whether the module gets an adapter.</summary>
    /// <param name="moduleFullName">The module's full name, e.g. <c>model.layers.3.mlp.down_proj</c>.</param>
    /// <param name="isLinear">Whether it is a Linear; only all-linear looks at it.</param>
    public bool Matches(string moduleFullName, bool isLinear = true)
    {
        if (IsExcluded(moduleFullName)) return false;
        if (_allLinear) return isLinear && !IsName(moduleFullName, _outputHead);
        if (_regex is not null) return _regex.IsMatch(moduleFullName);
        // PEFT quirk kept on purpose: an exact full-name match skips the layers_to_transform filter.
        if (_names!.Contains(moduleFullName)) return true;
        if (!_names!.Any(n => moduleFullName.EndsWith("." + n, StringComparison.Ordinal))) return false;
        if (_layers is null) return true;
        var m = _layerIndex.Match(moduleFullName);
        return m.Success && _layers.Contains(int.Parse(m.Groups[1].Value));
    }

    /// <summary>Whether the module gets an adapter, by its name and kind.</summary>
    public bool Matches(ModuleShape module) => Matches(module.Name, module.Kind == ModuleKind.Linear);

    bool IsExcluded(string name) =>
        _exclude.Any(e => IsName(name, e)) || (_excludeRegex?.IsMatch(name) ?? false);

    static bool IsName(string name, string entry) => name == entry || name.EndsWith("." + entry, StringComparison.Ordinal);

    static Regex FullMatch(string pattern, string field)
    {
        try { return new Regex($@"^(?:{pattern})\z"); }
        catch (ArgumentException e) { throw new PlanException(field, $"invalid regex '{pattern}': {e.Message}"); }
    }
}

/// <summary>The filters PEFT applies on top of target_modules.</summary>
public sealed record TargetFilters
{
    /// <summary>PEFT's list <c>exclude_modules</c>: names (exact or "." suffix) that never get an adapter; null = none.</summary>
    public IReadOnlyList<string>? ExcludeModules { get; init; }
    /// <summary>PEFT's string <c>exclude_modules</c>: a regex over the whole name; null = none.</summary>
    public string? ExcludeRegex { get; init; }
    /// <summary>PEFT's <c>layers_to_transform</c>: only these decoder blocks (0-based) get adapters; null or empty = all.
    /// Only with a list of names.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>Name of the ModuleList holding the blocks ("layers", "h"); null = any, as PEFT.</summary>
    public string? LayersPattern { get; init; }
    /// <summary>The output head all-linear leaves out (default <c>lm_head</c>).</summary>
    public string OutputHeadName { get; init; } = "lm_head";
}
