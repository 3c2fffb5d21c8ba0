using PeftSharp.IO;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// The `peft train` options a run was started with, kept as train-options.json in its folder, so that
/// `peft train --resume DIR` alone continues the run exactly. Options given again on the resuming command line win
/// (and are reported); the rest come back from the file. Where the run lives, the device, the thread count and
/// the dashboard are never restored: they describe this machine and session, not the run.
/// </summary>
public static class SavedTrainOptions
{
    public const string FileName = "train-options.json";
    static readonly string[] NotRestored = ["out", "overwrite", "resume", "device", "threads", "dashboard", "dashboard-port"];
    static readonly string[] Paths = ["model", "data", "eval-file", "heldout", "init-adapter", "chat-template"];

    static IEnumerable<(string Name, PropertyInfo Property)> Options() =>
        typeof(TrainSettings).GetProperties()
            .Select(p => (Name: p.GetCustomAttribute<CommandOptionAttribute>()?.LongNames.FirstOrDefault(), Property: p))
            .Where(o => o.Name is not null && !NotRestored.Contains(o.Name))
            .Select(o => (o.Name!, o.Property));

    /// <summary>Writes the options of <paramref name="s"/> into <paramref name="runDir"/> (paths made absolute).</summary>
    public static void Save(TrainSettings s, string runDir)
    {
        var json = new JsonObject();
        foreach (var (name, p) in Options())
        {
            json[name] = JsonSerializer.SerializeToNode(Normalise(name, p.GetValue(s)), p.PropertyType);
        }
        Directory.CreateDirectory(runDir);
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(runDir, FileName), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The run's train-options.json as markdown (an indented code block), for reporters' "config" text.</summary>
    public static string Markdown(string runDir) => File.Exists(Path.Combine(runDir, FileName))
        ? string.Concat(File.ReadAllLines(Path.Combine(runDir, FileName)).Select(l => "    " + l + "\n"))
        : $"(this run has no {FileName}: it was started by an older peft)";

    /// <summary>The run folder's options file for a --resume path (the run folder or one of its checkpoint folders), or null.</summary>
    public static string? Find(string resumePath)
    {
        string file = Path.Combine(Training.Checkpoint.RunFolder(resumePath), FileName);
        return File.Exists(file) ? file : null;
    }

    /// <summary>
    /// Fills every option of <paramref name="s"/> not named in <paramref name="givenArgs"/> from <paramref name="file"/>.
    /// Returns the options given again with a different value ("--lr 0.0005 (the run had 0.001)").
    /// </summary>
    public static IReadOnlyList<string> Restore(TrainSettings s, string file, IReadOnlyList<string> givenArgs)
    {
        JsonObject saved;
        try { saved = JsonFile.ReadObject(file); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{e.Message}: cannot read the run's options; give them again, or repair the file"); }
        var overridden = new List<string>();
        foreach (var (name, p) in Options())
        {
            if (!saved.TryGetPropertyValue(name, out var node)) continue;   // an option newer than the run keeps its default
            object? value;
            try { value = node?.Deserialize(p.PropertyType); }
            catch (JsonException) { throw new InvalidDataException($"{file}: '{name}' holds {node?.ToJsonString()}, not a {p.PropertyType.Name}"); }
            if (!Given(givenArgs, name)) p.SetValue(s, value);
            else if (!Equals(Normalise(name, p.GetValue(s)), value))
                overridden.Add($"--{name} {p.GetValue(s)} (the run had {node?.ToJsonString() ?? "null"})");
        }
        return overridden;
    }

    /// <summary>Paths are kept absolute, so a run resumes from any working directory.</summary>
    static object? Normalise(string name, object? value) => value is string path && Paths.Contains(name) ? Path.GetFullPath(path) : value;

    static bool Given(IReadOnlyList<string> args, string name) =>
        args.Any(a => a == "--" + name || a.StartsWith("--" + name + "=", StringComparison.Ordinal) || a.StartsWith("--" + name + ":", StringComparison.Ordinal));
}
