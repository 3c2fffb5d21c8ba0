using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using PeftSharp.IO;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Serving.Endpoints;

/// <summary>
/// GET /v1/adapters/{name}/card: what a loaded adapter is, for people (the playground shows it beside its column).
/// From the adapter folder's adapter_config.json: method, rank, alpha, targets, the base it names; the base check
/// (recorded fingerprint against the served base's); and, when the folder is a run's final/ (`peft train --out RUN`
/// writes RUN/final), the run's train-options.json (data, method, steps) and summary.json (data file and its statistics, headline numbers: eval loss,
/// exact match, held-out perplexity before/after). Files are read when asked, so a card follows a re-trained run;
/// for an adapter loaded from --adapter-root, a run-folder file is read only if it is no link and lies under the root.
/// </summary>
internal static class AdapterCardEndpoint
{
    /// <summary>Small JSON files only: a card never reads a large or odd file whole.</summary>
    const long MaxCardFileBytes = 1 << 20;

    /// <summary>train-options.json keys that say what the adapter was trained on and how (paths shown as file names).</summary>
    static readonly string[] TrainingKeys = ["data", "eval-file", "heldout", "method", "adapter-method", "epochs", "steps", "lr", "batch", "max-seq", "seed"];
    static readonly string[] PathKeys = ["data", "eval-file", "heldout"];

    /// <summary>summary.json's headline numbers.</summary>
    static readonly string[] SummaryKeys = ["description", "steps", "elapsed_s", "trainable_params", "total_params", "eval_loss_before", "eval_loss_after",
        "exact_match_before", "exact_match_after", "heldout_loss_before", "heldout_loss_after"];

    public static Task Handle(HttpContext http, ServerState s, string name)
    {
        var v = s.Adapters.Current().FirstOrDefault(a => a.Name == name)
            ?? throw ServingException.NotFound($"adapter '{name}' not found (loaded: {string.Join(", ", s.Adapters.Current().Select(a => a.Name).DefaultIfEmpty("none"))})");
        return EndpointIo.Json(http, 200, Card(v, s));
    }

    public static JsonObject Card(AdapterVersion v, ServerState s)
    {
        var config = ReadSmall(Path.Combine(v.Folder, AdapterFolderFiles.ConfigFile)) ?? new JsonObject();
        var card = new JsonObject
        {
            ["id"] = v.Name, ["object"] = "adapter.card", ["version"] = v.Version, ["content_hash"] = v.ContentHash,
            ["adapter_type"] = v.Info.Kind, ["peft_type"] = config["peft_type"]?.DeepClone(), ["rank"] = v.Info.Rank,
            ["alpha"] = config["lora_alpha"]?.DeepClone(), ["target_modules"] = config["target_modules"]?.DeepClone(),
            ["base_model_name_or_path"] = config["base_model_name_or_path"]?.DeepClone(),
            ["base"] = BaseCheck(v, s),
            ["folder"] = Path.GetFileName(Path.TrimEndingDirectorySeparator(v.Folder)),
        };
        string? run = RunFolder(v, s);
        card["run"] = run is null ? null : Path.GetFileName(run);
        var options = run is null ? null : ReadRunFile(run, "train-options.json", v, s);
        var summary = run is null ? null : ReadRunFile(run, Dashboard.DashboardRuns.SummaryFile, v, s);
        var training = Pick(options, TrainingKeys, PathKeys);
        // The data file and its statistics as the run resolved them (train-options.json has null for the demo default).
        if (Pick(summary, ["data", "data_stats"], ["data"]) is { } data)
        {
            training ??= new JsonObject();
            foreach (var (k, value) in data) training[k] ??= value?.DeepClone();
        }
        // adapter-method only means something for preference runs (it defaults to qlora for every run).
        if (training?["method"]?.GetValue<string>() is not ("dpo" or "orpo")) training?.Remove("adapter-method");
        card["training"] = training;
        card["results"] = Pick(summary, SummaryKeys, []);
        return card;
    }

    /// <summary>
    /// "same": the recorded digest is the served base's (default targets); "checked_at_load": recorded over other
    /// targets, which the load compared tensor by tensor; "not_recorded": a PEFT-made adapter (shapes checked at load).
    /// A loaded adapter always passed its load check, so there is no "different" here (409 at load instead).
    /// </summary>
    static JsonObject BaseCheck(AdapterVersion v, ServerState s) => new()
    {
        ["served"] = s.Adapters.BaseName,
        ["served_fingerprint"] = s.Adapters.BaseFingerprint,
        ["recorded_fingerprint"] = v.Info.BaseFingerprint,
        ["match"] = v.Info.BaseFingerprint is null ? "not_recorded" : v.Info.BaseFingerprint == s.Adapters.BaseFingerprint ? "same" : "checked_at_load",
    };

    /// <summary>The run folder when the adapter is RUN/final (RUN holds summary.json or train-options.json), else null.</summary>
    static string? RunFolder(AdapterVersion v, ServerState s)
    {
        string folder = Path.TrimEndingDirectorySeparator(Path.GetFullPath(v.Folder));
        if (Path.GetDirectoryName(folder) is not { } parent) return null;
        if (!File.Exists(Path.Combine(parent, Dashboard.DashboardRuns.SummaryFile)) && !File.Exists(Path.Combine(parent, "train-options.json"))) return null;
        if (v.UnderRoot && s.Options.AdapterRoot is { } root)
        {
            try { AdapterPaths.ResolveUnderRoot(root, parent); }
            catch (ServingException) { return null; }
        }
        return parent;
    }

    static JsonObject? ReadRunFile(string run, string file, AdapterVersion v, ServerState s)
    {
        string path = Path.Combine(run, file);
        if (v.UnderRoot && new FileInfo(path).LinkTarget is not null) return null;   // never follow a link out of the root
        return ReadSmall(path);
    }

    /// <summary>A small JSON object file, or null when it is absent, too large or not JSON (a card shows what it can).</summary>
    static JsonObject? ReadSmall(string path)
    {
        if (!File.Exists(path)) return null;
        try { return JsonFile.ReadObject(path, MaxCardFileBytes); }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) { return null; }
    }

    static JsonObject? Pick(JsonObject? from, string[] keys, string[] pathKeys)
    {
        if (from is null) return null;
        var o = new JsonObject();
        foreach (var k in keys)
        {
            if (from[k] is not { } value) continue;
            o[k] = pathKeys.Contains(k) && value is JsonValue pv && pv.TryGetValue<string>(out var p) ? Path.GetFileName(p) : value.DeepClone();
        }
        return o;
    }
}
