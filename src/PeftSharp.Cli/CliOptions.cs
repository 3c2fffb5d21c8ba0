using System.Reflection;
using System.Text.RegularExpressions;
using Spectre.Console;
using Spectre.Console.Cli;
using Spectre.Console.Cli.Help;

namespace PeftSharp.Cli;

/// <summary>
/// Flag errors every command gets without code of its own. Parsing is strict (an unknown flag or argument is an error;
/// Spectre.Console.Cli otherwise passes it on as a "remaining argument" nothing reads); these turn Spectre's messages
/// into ones that name the flag: the closest flag of that command is suggested for an unknown one, and a value that
/// does not convert names its flag and what it takes. Flags come from each command's settings type
/// ([CommandOption] attributes), recorded as commands are added, so commands and options added later are covered.
/// </summary>
public static class CliOptions
{
    /// <summary>
    /// The warning for sequences longer than the model's context (max_position_embeddings; 0 when the config has none),
    /// or null: their later positions were never trained (rotary or learned position tables past the pretraining length),
    /// so a run or a plan at that length is rarely what was meant. A warning, not an error: a model extended by RoPE
    /// scaling is trained past its recorded length on purpose.
    /// </summary>
    public static string? PastContext(string what, long length, int maxPositions) =>
        maxPositions > 0 && length > maxPositions
            ? $"{what} is past the model's context (max_position_embeddings {maxPositions}): positions after {maxPositions} were never trained"
            : null;

    /// <summary>
    /// --out of a command that writes a whole model folder (merge, quantize) and so replaces what is there: an existing
    /// folder that holds files but no config.json (not a model folder) is refused, so `--out .` or `--out ~/models`
    /// cannot wipe it; an earlier model folder there is replaced, as before.
    /// </summary>
    public static ValidationResult ModelOutFolder(string dir, string flag = "--out") =>
        OutFolderIsAFile(dir, flag) is { } file ? file
        : Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() && !File.Exists(Path.Combine(dir, "config.json"))
            ? ValidationResult.Error($"{flag} {dir}: exists and is not a model folder (no config.json); writing there would replace everything in it, so give a new folder")
            : ValidationResult.Success();

    /// <summary>
    /// A folder flag (--out of train, compare, merge, quantize, export ollama) naming an existing file: one line naming the
    /// flag, before anything loads. Without it train printed its whole plan and then .NET's "The file '...' already
    /// exists.", and merge/quantize "Cannot create '...' because a file or directory with the same name already exists."
    /// </summary>
    public static ValidationResult? OutFolderIsAFile(string? dir, string flag = "--out") =>
        dir is { Length: > 0 } && File.Exists(dir) ? ValidationResult.Error($"{flag} {dir}: is a file; give a folder") : null;

    /// <summary>A file flag (export gguf's --out) naming an existing folder: one line naming the flag (it was .NET's
    /// "Is a directory : '...'").</summary>
    public static ValidationResult? OutFileIsAFolder(string? file, string flag = "--out") =>
        file is { Length: > 0 } && Directory.Exists(file) ? ValidationResult.Error($"{flag} {file}: is a folder; give a file path") : null;

    /// <summary>Rewrites Spectre's "Unknown option 'x'." for command <paramref name="args"/>[0]; null for other messages.</summary>
    public static string? ExplainUnknownOption(string message, IReadOnlyList<string> args, IReadOnlyDictionary<string, Type> settingsByCommand)
    {
        var m = Regex.Match(message, @"^(?:Unknown|Unexpected) option '(.*)'\.?$"); // Unexpected: before any command
        if (!m.Success) return null;
        string name = m.Groups[1].Value, given = (name.Length == 1 ? "-" : "--") + name;
        string command = args.Count > 0 && settingsByCommand.ContainsKey(args[0]) ? args[0] : "";
        IReadOnlyList<string> flags = settingsByCommand.TryGetValue(command, out var type) ? Flags(type) : ["--help", "--version"];
        string where = command.Length > 0 ? $" for `peft {command}`" : "";
        return $"unknown option '{given}'{where}{Suggestion(given, flags)}; see `peft {command}{(command.Length > 0 ? " " : "")}--help`";
    }

    /// <summary>
    /// "--prompt: needs a value" when a flag that takes one ends the command line or is followed by another flag; null
    /// otherwise. Spectre.Console.Cli then binds its internal name "__default_command" as the value: `generate --prompt`
    /// generated from that text, `plan --model` looked for a preset of that name, `--rank` failed to convert it.
    /// Flags come from the command's settings (<see cref="CommandOptions"/>).
    /// </summary>
    public static string? MissingValue(IReadOnlyList<string> args, IReadOnlyDictionary<string, Type> settingsByCommand)
    {
        var options = CommandOptions(args, settingsByCommand).Select(o => o.Attribute).ToList();
        var flags = options.SelectMany(Names).Concat(["-h", "--help"]).ToHashSet(StringComparer.Ordinal);
        var valued = options.Where(a => a.ValueName is not null && !a.ValueIsOptional).SelectMany(Names).ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            if (!valued.Contains(args[i])) continue;
            if (i + 1 == args.Count || flags.Contains(args[i + 1])) return $"{args[i]}: needs a value";
            i++;   // the value, whatever it looks like
        }
        return null;
    }

    /// <summary>
    /// "--steps: given twice (5, then 10); give it once" when a flag that takes one value (or a switch) appears more than
    /// once, null otherwise. Spectre.Console.Cli keeps the last value without a word, so `train --steps 5 ... --steps 10`
    /// (an edited command line, a flag appended to a saved one) ran with a value the user may not have meant. Flags
    /// bound to an array (--adapter) are the repeatable ones and are left alone. `--flag=value` and `--flag:value`
    /// count as the flag.
    /// </summary>
    public static string? RepeatedFlag(IReadOnlyList<string> args, IReadOnlyDictionary<string, Type> settingsByCommand)
    {
        var options = CommandOptions(args, settingsByCommand).ToList();
        // Each spelling of a flag maps to the option's first name, so two spellings of one option count together.
        var canonical = new Dictionary<string, string>(StringComparer.Ordinal);
        var repeatable = new HashSet<string>(StringComparer.Ordinal);
        var valued = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (property, attribute) in options)
        {
            string first = Names(attribute).First();
            foreach (var name in Names(attribute)) canonical.TryAdd(name, first);
            if (property.PropertyType.IsArray) repeatable.Add(first);
            if (attribute.ValueName is not null && !attribute.ValueIsOptional) valued.Add(first);
        }
        var seen = new Dictionary<string, (string Given, string? Value)>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg == "--") break;   // what follows is not options
            int glued = arg.StartsWith('-') ? arg.IndexOfAny(['=', ':']) : -1;
            string given = glued > 0 ? arg[..glued] : arg;
            if (!canonical.TryGetValue(given, out var flag)) continue;
            string? value = glued > 0 ? arg[(glued + 1)..] : valued.Contains(flag) && i + 1 < args.Count ? args[++i] : null;
            if (repeatable.Contains(flag)) continue;
            if (seen.TryGetValue(flag, out var before))
            {
                string both = given == before.Given ? given : $"{flag} ({before.Given}, then {given})";
                string values = value is null && before.Value is null ? "" : $" ({before.Value}, then {value})";
                return $"{both}: given twice{values}; give it once";
            }
            seen[flag] = (given, value);
        }
        return null;
    }

    /// <summary>
    /// The options of the command <paramref name="args"/> start with (`train`, or a branch's `export gguf`), or of every
    /// command when they name none recorded (no command yet, a misspelt one).
    /// </summary>
    static IEnumerable<(PropertyInfo Property, CommandOptionAttribute Attribute)> CommandOptions(IReadOnlyList<string> args, IReadOnlyDictionary<string, Type> settingsByCommand)
    {
        IEnumerable<Type> types = args.Count > 1 && settingsByCommand.TryGetValue($"{args[0]} {args[1]}", out var sub) ? [sub]
            : args.Count > 0 && settingsByCommand.TryGetValue(args[0], out var own) ? [own]
            : typeof(CliOptions).Assembly.GetTypes().Where(t => typeof(CommandSettings).IsAssignableFrom(t) && !t.IsAbstract);
        return types.SelectMany(Options);
    }

    static IEnumerable<string> Names(CommandOptionAttribute a) => a.LongNames.Select(n => "--" + n).Concat(a.ShortNames.Select(n => "-" + n));

    /// <summary>The settings type of a command type (the TSettings of Command&lt;TSettings&gt; or AsyncCommand&lt;TSettings&gt;).</summary>
    public static Type? SettingsOf(Type commandType)
    {
        for (var t = commandType; t is not null; t = t.BaseType)
            if (t.IsGenericType && t.GetGenericArguments() is [var a] && typeof(CommandSettings).IsAssignableFrom(a)) return a;
        return null;
    }

    /// <summary>`--pack-weights auto|on|off` (train and plan) as the trainer and the planner take it: null (auto), true or false.</summary>
    public static bool? PackWeights(string mode) => mode.ToLowerInvariant() switch
    {
        "auto" => null, "on" => true, "off" => false,
        _ => throw new ArgumentException($"--pack-weights: '{mode}' is not auto, on or off"),
    };

    /// <summary>
    /// "--lr must be a finite number (got NaN)" for the first NaN/Infinity among a settings object's number options, else
    /// null. .NET parses "NaN" and "Infinity" as doubles, and range checks (x &lt;= 0) let NaN through.
    /// </summary>
    public static string? NonFiniteNumber(CommandSettings settings)
    {
        foreach (var (p, a) in Options(settings.GetType()))
            if (p.GetValue(settings) is double d && !double.IsFinite(d))
                return $"--{a.LongNames.FirstOrDefault() ?? a.ShortNames.First()} must be a finite number (got {(double.IsNaN(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity")})";
        return null;
    }

    /// <summary>Every flag of a settings type (inherited ones included), with dashes: --max-new-tokens, -h.</summary>
    public static IReadOnlyList<string> Flags(Type settingsType) =>
        Options(settingsType).SelectMany(o => o.Attribute.LongNames.Select(n => "--" + n).Concat(o.Attribute.ShortNames.Select(n => "-" + n))).ToList();

    static IEnumerable<(PropertyInfo Property, CommandOptionAttribute Attribute)> Options(Type settingsType) =>
        settingsType.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (p, p.GetCustomAttribute<CommandOptionAttribute>()))
            .Where(x => x.Item2 is not null)
            .Select(x => (x.p, x.Item2!));

    /// <summary>"; did you mean --x?" when a flag is within a third of its length in edits, or shares a word with it.</summary>
    public static string Suggestion(string given, IReadOnlyList<string> flags)
    {
        if (flags.Count == 0) return "";
        var best = flags.Select(f => (Flag: f, Distance: Levenshtein(given, f))).OrderBy(x => x.Distance).ThenBy(x => x.Flag, StringComparer.Ordinal).First();
        var words = given.TrimStart('-').Split('-');
        if (best.Distance > Math.Max(2, given.Length / 3))
            best = flags.Select(f => (Flag: f, Distance: -f.TrimStart('-').Split('-').Intersect(words).Count())).Where(x => x.Distance < 0)
                .OrderBy(x => x.Distance).ThenBy(x => x.Flag.Length).FirstOrDefault();
        return best.Flag is null ? "" : $"; did you mean {best.Flag}?";
    }

    static int Levenshtein(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int prev = d[0];
            d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int cur = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
                prev = cur;
            }
        }
        return d[b.Length];
    }

    /// <summary>
    /// Spectre's conversion failure ("Failed to convert 'abc' to Nullable`1.") names neither the flag nor the type:
    /// find the flag the value was given to and say what it takes. Null when the message is not that failure.
    /// </summary>
    public static string? ExplainConversionFailure(string message, IReadOnlyList<string> args, IReadOnlyDictionary<string, Type> settingsByCommand)
    {
        var m = Regex.Match(message, @"^Failed to convert '(.*)' to ");
        if (!m.Success) return null;
        string value = m.Groups[1].Value;
        string? flag = null;
        for (int i = 0; i < args.Count && flag is null; i++)
        {
            if (args[i].StartsWith('-') && args[i].EndsWith("=" + value, StringComparison.Ordinal)) flag = args[i][..args[i].IndexOf('=')];
            else if (args[i].StartsWith('-') && i + 1 < args.Count && args[i + 1] == value) flag = args[i];
        }
        if (flag is null) return null;
        // The command's own settings type (args[0]); its flags decide what the value should have been.
        var settingsTypes = args.Count > 0 && settingsByCommand.TryGetValue(args[0], out var st) ? [st] : settingsByCommand.Values.Distinct();
        var type = settingsTypes.SelectMany(Options).Where(o => o.Attribute.LongNames.Any(n => "--" + n == flag) || o.Attribute.ShortNames.Any(n => "-" + n == flag))
            .Select(o => Nullable.GetUnderlyingType(o.Property.PropertyType) ?? o.Property.PropertyType).FirstOrDefault();
        string wanted = type == typeof(int) || type == typeof(long) ? "a whole number"
            : type == typeof(double) || type == typeof(float) ? "a number" : type == typeof(bool) ? "true or false" : "a valid value";
        return $"{flag}: '{value}' is not {wanted}";
    }
}

/// <summary>Passes every call on to Spectre's configurator and records which settings type each command name binds.</summary>
sealed class RecordingConfigurator(IConfigurator inner, Dictionary<string, Type> settingsByCommand) : IConfigurator
{
    public ICommandAppSettings Settings => inner.Settings;
    public IConfigurator AddExample(params string[] args) { inner.AddExample(args); return this; }
    public IConfigurator SetHelpProvider(IHelpProvider helpProvider) { inner.SetHelpProvider(helpProvider); return this; }
    public IConfigurator SetHelpProvider<T>() where T : IHelpProvider { inner.SetHelpProvider<T>(); return this; }

    public ICommandConfigurator AddCommand<TCommand>(string name) where TCommand : class, ICommand
    {
        if (CliOptions.SettingsOf(typeof(TCommand)) is { } s) settingsByCommand[name] = s;
        return inner.AddCommand<TCommand>(name);
    }

    public ICommandConfigurator AddDelegate<TSettings>(string name, Func<CommandContext, TSettings, CancellationToken, int> func) where TSettings : CommandSettings
    {
        settingsByCommand[name] = typeof(TSettings);
        return inner.AddDelegate(name, func);
    }

    public ICommandConfigurator AddAsyncDelegate<TSettings>(string name, Func<CommandContext, TSettings, CancellationToken, Task<int>> func) where TSettings : CommandSettings
    {
        settingsByCommand[name] = typeof(TSettings);
        return inner.AddAsyncDelegate(name, func);
    }

    public IBranchConfigurator AddBranch<TSettings>(string name, Action<IConfigurator<TSettings>> action) where TSettings : CommandSettings =>
        inner.AddBranch<TSettings>(name, branch => action(new RecordingBranchConfigurator<TSettings>(branch, name, settingsByCommand)));
}

/// <summary>The same for a branch's commands, recorded as "BRANCH COMMAND" (`export gguf`).</summary>
sealed class RecordingBranchConfigurator<TSettings>(IConfigurator<TSettings> inner, string branch, Dictionary<string, Type> settingsByCommand)
    : IConfigurator<TSettings> where TSettings : CommandSettings
{
    public void SetDescription(string description) => inner.SetDescription(description);
    public void AddExample(params string[] args) => inner.AddExample(args);
    public void HideBranch() => inner.HideBranch();
    public void SetDefaultCommand<TDefaultCommand>() where TDefaultCommand : class, ICommandLimiter<TSettings> => inner.SetDefaultCommand<TDefaultCommand>();

    public ICommandConfigurator AddCommand<TCommand>(string name) where TCommand : class, ICommandLimiter<TSettings>
    {
        if (CliOptions.SettingsOf(typeof(TCommand)) is { } s) settingsByCommand[$"{branch} {name}"] = s;
        return inner.AddCommand<TCommand>(name);
    }

    public ICommandConfigurator AddDelegate<TDerivedSettings>(string name, Func<CommandContext, TDerivedSettings, CancellationToken, int> func) where TDerivedSettings : TSettings
    {
        settingsByCommand[$"{branch} {name}"] = typeof(TDerivedSettings);
        return inner.AddDelegate(name, func);
    }

    public ICommandConfigurator AddAsyncDelegate<TDerivedSettings>(string name, Func<CommandContext, TDerivedSettings, CancellationToken, Task<int>> func) where TDerivedSettings : TSettings
    {
        settingsByCommand[$"{branch} {name}"] = typeof(TDerivedSettings);
        return inner.AddAsyncDelegate(name, func);
    }

    public IBranchConfigurator AddBranch<TDerivedSettings>(string name, Action<IConfigurator<TDerivedSettings>> action) where TDerivedSettings : TSettings =>
        inner.AddBranch<TDerivedSettings>(name, sub => action(new RecordingBranchConfigurator<TDerivedSettings>(sub, $"{branch} {name}", settingsByCommand)));
}
