using System.Text.RegularExpressions;

namespace PeftSharp.Cli;

/// <summary>
/// `train --rank-pattern/--alpha-pattern` (KEY=VALUE,... with PEFT's regex keys, kept verbatim as adapter_config.json
/// keys) and `--layers` (0-3,7). A key may not hold a comma or '='; bad entries name the flag and the entry.
/// </summary>
public static class PatternFlags
{
    public static IReadOnlyDictionary<string, T> Dict<T>(string? spec, string flag, Func<string, T?> parse) where T : struct
    {
        var result = new Dictionary<string, T>();
        if (spec is null) return result;
        foreach (var entry in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = entry.LastIndexOf('=');
            string key = eq > 0 ? entry[..eq].Trim() : "";
            T? value = eq > 0 ? parse(entry[(eq + 1)..].Trim()) : null;
            if (key.Length == 0 || value is null) throw new ArgumentException($"{flag}: '{entry}' is not KEY=VALUE (e.g. q_proj=16)");
            try { _ = new Regex(key); }
            catch (ArgumentException e) { throw new ArgumentException($"{flag}: key '{key}' is not a valid regex ({e.Message})"); }
            if (!result.TryAdd(key, value.Value)) throw new ArgumentException($"{flag}: key '{key}' is given twice");
        }
        if (result.Count == 0) throw new ArgumentException($"{flag}: no KEY=VALUE entries in '{spec}'");
        return result;
    }

    /// <summary>"0-3,7" as [0, 1, 2, 3, 7] (sorted, distinct).</summary>
    public static IReadOnlyList<int> Layers(string spec, string flag)
    {
        var layers = new SortedSet<int>();
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var m = Regex.Match(part, @"^(\d+)(?:-(\d+))?$");
            if (!m.Success) throw new ArgumentException($"{flag}: '{part}' is not a layer index or range (e.g. 0-3,7)");
            int from = int.Parse(m.Groups[1].Value), to = m.Groups[2].Success ? int.Parse(m.Groups[2].Value) : from;
            if (to < from) throw new ArgumentException($"{flag}: range '{part}' ends before it starts");
            for (int i = from; i <= to; i++) layers.Add(i);
        }
        if (layers.Count == 0) throw new ArgumentException($"{flag}: no layers in '{spec}'");
        return layers.ToList();
    }
}
