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

    /// <summary>A list of module names: exact name or suffix ".name".</summary>
    public static TargetMatcher FromNames(IEnumerable<string> names, TargetFilters? filters = null)
    {
        var list = names.Select(n => n.Trim()).Where(n => n.Length > 0).ToList();
        if (list.Count == 0) throw new PlanException("target_modules", "the list is empty");
        return new(list, null, false, filters);
    }

    /// <summary>A regex matched against the whole module name.</summary>
    public static TargetMatcher FromRegex(string pattern, TargetFilters? filters = null) => new(null, pattern, false, filters);

    /// <summary>Every Linear module except the output head.</summary>
    public static TargetMatcher AllLinear(TargetFilters? filters = null) => new(null, null, true, filters);

    /// <summary>PEFT's default LoRA targets per model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).</summary>
    public static TargetMatcher DefaultFor(string modelType) => modelType switch
    {
        "gpt2" => FromNames(["c_attn"]),
        "phi3" => FromNames(["qkv_proj"]),
        _ => FromNames(["q_proj", "v_proj"]),
    };

    /// <summary>CLI/text form: "all-linear", "regex:PATTERN", or a comma-separated list of names.</summary>
    public static TargetMatcher Parse(string spec, TargetFilters? filters = null) =>
        spec.Trim() == AllLinearKeyword ? AllLinear(filters)
        : spec.StartsWith("regex:", StringComparison.Ordinal) ? FromRegex(spec["regex:".Length..], filters)
        : FromNames(spec.Split(','), filters);

    /// <summary>Whether the module gets an adapter. `isLinear` only matters for all-linear.</summary>
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
    public IReadOnlyList<string>? ExcludeModules { get; init; }
    public string? ExcludeRegex { get; init; }
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>Name of the ModuleList holding the blocks ("layers", "h"); null = any, as PEFT.</summary>
    public string? LayersPattern { get; init; }
    public string OutputHeadName { get; init; } = "lm_head";
}
