using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PeftSharp.Cli;

namespace PeftSharp.Tests.Cli;

/// <summary>Issue 16 items 12-14: --help everywhere, unknown flags, flag values and config.json validation, --version.</summary>
[Collection("console")]
public class CliFlagTests
{
    /// <summary>`peft ARGS` with colour codes removed from stdout (help output is styled).</summary>
    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (code, stdout, stderr) = CliCapture.Run(args);
        return (code, Regex.Replace(stdout, @"\x1b\[[0-9;]*m", ""), stderr);
    }

    /// <summary>Every command `peft --help` lists (so commands added later are covered too).</summary>
    public static IReadOnlyList<string> Commands()
    {
        var (code, stdout, _) = Run("--help");
        Assert.Equal(0, code);
        string commands = stdout[(stdout.IndexOf("COMMANDS:", StringComparison.Ordinal) + "COMMANDS:".Length)..];
        return Regex.Matches(commands, @"^ {4}([a-z][a-z0-9-]*) ", RegexOptions.Multiline).Select(m => m.Groups[1].Value).ToList();
    }

    [Fact]
    public void HelpWorksOnEveryCommand()
    {
        var (commands, help) = (Commands(), Run("--help").Out);
        Assert.True(commands.Contains("generate"), help);
        Assert.True(commands.Count >= 11, string.Join(", ", commands));
        foreach (var c in commands)
        {
            var (code, stdout, stderr) = Run(c, "--help");
            Assert.True(code == 0, $"peft {c} --help exited {code}: {stderr}");
            Assert.Contains("USAGE:", stdout);
        }
        // Descriptions holding brackets (Spectre markup characters) come out literally.
        Assert.Contains("NAME=DIR[:WEIGHT]", Run("generate", "--help").Out.Replace("\n", "").Replace(" ", ""));
        Assert.Contains("[B,T]", Run("logits", "--help").Out);
    }

    /// <summary>
    /// A flag that takes a value, given none (last on the line, or followed by another flag), is one error line naming it.
    /// Spectre.Console.Cli bound its internal "__default_command" as the value: `generate --prompt` generated from that
    /// text, `plan --model` looked for that preset, `--rank` failed with "Failed to convert '__default_command' to Nullable`1".
    /// </summary>
    [Theory]
    [InlineData(new[] { "generate", "--model", "TINY", "--prompt" }, "--prompt")]
    [InlineData(new[] { "plan", "--model" }, "--model")]
    [InlineData(new[] { "plan", "--model", "llama-2-7b", "--rank" }, "--rank")]
    [InlineData(new[] { "plan", "--model", "llama-2-7b", "--rank", "--batch", "2" }, "--rank")]
    [InlineData(new[] { "export", "gguf", "--model", "TINY", "--out" }, "--out")]
    public void AFlagWithoutItsValueIsNamed(string[] args, string flag)
    {
        var (code, stdout, stderr) = CliCapture.Run([.. args.Select(a => a == "TINY" ? TestPaths.TinyLlama : a)]);
        Assert.Equal(1, code);
        Assert.Equal($"error: {flag}: needs a value", stderr.Trim());
        Assert.DoesNotContain("__default_command", stdout);
    }

    [Fact]
    public void ANegativeNumberIsStillAValue()
    {
        var (code, _, stderr) = CliCapture.Run("plan", "--model", "llama-2-7b", "--rank", "-3");
        Assert.Equal(1, code);
        Assert.Equal("error: rank: must be positive, got -3", stderr.Trim());
    }

    [Theory]
    [InlineData(new[] { "generate", "--prompt", "hi", "--max-tokens", "3" }, "--max-tokens", "--max-new-tokens")]
    [InlineData(new[] { "serve", "--bogus" }, "--bogus", null)]
    [InlineData(new[] { "plan", "--modle", "llama-2-7b" }, "--modle", "--model")]
    [InlineData(new[] { "train", "--step", "3" }, "--step", "--steps")]
    public void UnknownFlagIsAnErrorNamingItAndTheClosestFlag(string[] args, string unknown, string? suggested)
    {
        string[] withModel = args[0] is "generate" or "serve" ? [.. args, "--model", TestPaths.TinyLlama] : args;
        var (code, _, stderr) = CliCapture.Run(withModel);
        Assert.Equal(1, code);
        Assert.StartsWith($"error: unknown option '{unknown}' for `peft {args[0]}`", stderr);
        if (suggested is not null) Assert.Contains($"did you mean {suggested}?", stderr);
        else Assert.DoesNotContain("did you mean", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Theory]
    [InlineData(new[] { "train", "--steps", "abc" }, "error: --steps: 'abc' is not a whole number")]
    [InlineData(new[] { "train", "--lr=abc" }, "error: --lr: 'abc' is not a number")]
    [InlineData(new[] { "train", "--lr", "NaN" }, "error: --lr must be a finite number (got NaN)")]
    [InlineData(new[] { "train", "--alpha", "Infinity" }, "error: --alpha must be a finite number (got Infinity)")]
    [InlineData(new[] { "train", "--warmup", "-1" }, "error: --warmup must be 0 or more steps (got -1)")]
    [InlineData(new[] { "train", "--save-interval", "-1" }, "error: --save-interval must be 0")]
    [InlineData(new[] { "train", "--eval-interval", "0" }, "error: --eval-interval must be a positive step count (got 0)")]
    [InlineData(new[] { "train", "--eval-interval", "-1" }, "error: --eval-interval must be a positive step count (got -1)")]
    [InlineData(new[] { "train", "--device", "tpu" }, "error: --device: 'tpu' is not cpu or cuda")]
    [InlineData(new[] { "train", "--pack-weights", "maybe" }, "error: --pack-weights: 'maybe' is not auto, on or off")]
    [InlineData(new[] { "plan", "--model", "llama-2-7b", "--pack-weights", "yes" }, "error: --pack-weights: 'yes' is not auto, on or off")]
    [InlineData(new[] { "generate", "--prompt", "hi", "--temperature", "NaN" }, "error: --temperature must be a finite number (got NaN)")]
    public void BadFlagValuesNameTheFlag(string[] args, string expected)
    {
        // --data that does not exist: if validation let the value through, the run still stops before training.
        string[] full = args[0] == "train" ? [.. args, "--data", "/nonexistent.jsonl"] : args.Contains("--model") ? args : [.. args, "--model", TestPaths.TinyLlama];
        var (code, _, stderr) = CliCapture.Run(full);
        Assert.Equal(1, code);
        Assert.StartsWith(expected, stderr);
    }

    /// <summary>
    /// Every command and every flag its --help lists: a flag given twice is one error naming it (Spectre.Console.Cli kept
    /// the last value without a word: `train --steps 5 --steps 10` trained 10 steps), except the flags --help documents
    /// as repeatable. Those get past the check to the unknown flag appended after them, so no command runs.
    /// </summary>
    [Fact]
    public void AFlagGivenTwiceIsAnErrorUnlessRepeatable()
    {
        var commands = Commands().SelectMany(c => c == "export" ? SubCommands("export").Select(s => new[] { c, s }) : [new[] { c }]).ToList();
        Assert.Contains(commands, c => c is ["export", "gguf"]);
        int repeatable = 0, checkedFlags = 0;
        foreach (var command in commands)
            foreach (var (flag, takesValue, description) in HelpOptions(command))
            {
                if (flag == "--help") continue;
                string[] once = takesValue ? [flag, "1"] : [flag];
                string[] twice = takesValue ? [flag, "2"] : [flag];
                var (code, _, stderr) = Run([.. command, .. once, .. twice, "--not-a-flag"]);
                Assert.Equal(1, code);
                string line = string.Join(' ', command) + " " + flag;
                if (description.Contains("repeatable", StringComparison.Ordinal))
                {
                    repeatable++;
                    Assert.True(stderr.Contains("unknown option '--not-a-flag'", StringComparison.Ordinal), $"{line}: {stderr}");
                }
                else
                {
                    string values = takesValue ? " (1, then 2)" : "";
                    Assert.True(stderr.Trim() == $"error: {flag}: given twice{values}; give it once", $"{line}: {stderr}");
                }
                checkedFlags++;
            }
        Assert.True(repeatable >= 7, $"{repeatable} repeatable flags");   // --adapter of generate, logits, eval, merge, serve, export gguf/ollama
        Assert.True(checkedFlags > 100, $"{checkedFlags} flags");
        // The = and : spellings are the same flag.
        Assert.Equal("error: --steps: given twice (5, then 10); give it once", Run("train", "--steps", "5", "--steps=10").Err.Trim());
        Assert.Equal("error: --out: given twice (a, then b); give it once", Run("export", "gguf", "--out:a", "--out", "b").Err.Trim());
    }

    static IEnumerable<string> SubCommands(string branch)
    {
        string help = Run(branch, "--help").Out;
        return Regex.Matches(help[help.IndexOf("COMMANDS:", StringComparison.Ordinal)..], @"^ {4}([a-z][a-z0-9-]*) ", RegexOptions.Multiline).Select(m => m.Groups[1].Value);
    }

    /// <summary>The OPTIONS of `peft COMMAND --help`: each flag, whether it takes a value, and its (wrapped) description.</summary>
    static List<(string Flag, bool TakesValue, string Description)> HelpOptions(string[] command)
    {
        var (code, stdout, _) = Run([.. command, "--help"]);
        Assert.Equal(0, code);
        var options = new List<(string, bool, string)>();
        string section = stdout[(stdout.IndexOf("OPTIONS:", StringComparison.Ordinal) + "OPTIONS:".Length)..];
        foreach (var line in section.Split('\n'))
        {
            if (Regex.IsMatch(line, @"^[A-Z]+:")) break;   // the next section (COMMANDS:, EXAMPLES:)
            var m = Regex.Match(line, @"^ {4}(?:-\w, | {4})(--[a-z0-9-]+)( <[^>]+>)?(.*)$");
            if (m.Success) options.Add((m.Groups[1].Value, m.Groups[2].Success, m.Groups[3].Value));
            else if (options.Count > 0 && line.Trim().Length > 0)
                options[^1] = (options[^1].Item1, options[^1].Item2, options[^1].Item3 + " " + line.Trim());
        }
        Assert.NotEmpty(options);
        return options;
    }

    [Fact]
    public void VersionPrintsTheVersion()
    {
        var (code, stdout, _) = Run("--version");
        Assert.Equal(0, code);
        Assert.Matches(@"^\d+\.\d+\.\d+", stdout.Trim());
        Assert.Equal(CliApp.Version, stdout.Trim());
        var (bad, _, stderr) = Run("--verison");
        Assert.Equal(1, bad);
        Assert.Equal("error: unknown option '--verison'; did you mean --version?; see `peft --help`", stderr.Trim());
    }

    /// <summary>A copy of the tiny model with one config.json field replaced.</summary>
    static string ModelWith(string field, JsonNode? value)
    {
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(TestPaths.TinyLlama)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config[field] = value;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "num_hidden_layers", "0", "'num_hidden_layers' must be positive, got 0" },
        { "vocab_size", "1e12", "'vocab_size' must be an integer that fits 32 bits" },
        { "num_attention_heads", "5", "'num_attention_heads' 5 heads do not divide hidden_size 64" },
        { "max_position_embeddings", "-1", "'max_position_embeddings' must be positive, got -1" },
        { "hidden_size", "-256", "'hidden_size' must be positive, got -256" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void EveryCommandRefusesABadConfigNamingFileAndField(string field, string json, string expected)
    {
        string model = ModelWith(field, JsonNode.Parse(json));
        string config = Path.Combine(model, "config.json"), output = Path.Combine(TestPaths.TempDir(), "q");
        string[][] commands =
        [
            ["quantize", "--model", model, "--out", output],
            ["inspect", "--model", model],
            ["generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "1"],
            ["plan", "--model", config],
        ];
        foreach (var args in commands)
        {
            var (code, _, stderr) = CliCapture.Run(args);
            Assert.True(code == 1, $"{args[0]} exited {code}");
            Assert.Contains($"{config}: {expected}", stderr);
        }
        Assert.False(Directory.Exists(output), "quantize wrote output for a config it should refuse");
    }

    [Fact]
    public void PlanAndInspectRefuseABinaryConfigNamingTheFile()
    {
        string model = ModelWith("x", null);
        string config = Path.Combine(model, "config.json");
        File.WriteAllBytes(config, Enumerable.Range(0, 3000).Select(i => (byte)(i * 37 % 251)).ToArray());
        foreach (var args in new[] { new[] { "plan", "--model", config }, ["inspect", "--model", model] })
        {
            var (code, _, stderr) = CliCapture.Run(args);
            Assert.Equal(1, code);
            // plan's reader says "not valid JSON"; the engine's reads the file as UTF-8 text first ("not valid UTF-8 text").
            Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape(config)}: not valid (JSON|UTF-8 text)", stderr);
        }
    }

    [Fact]
    public void PlanRefusesAHugeConfigWithoutReadingIt()
    {
        string config = Path.Combine(TestPaths.TempDir(), "config.json");
        using (var f = File.Create(config)) f.SetLength(PeftSharp.Memory.ModelConfig.MaxConfigBytes + 1); // sparse: no disk used
        var (code, _, stderr) = CliCapture.Run("plan", "--model", config);
        Assert.Equal(1, code);
        Assert.Contains($"{config}: 16,777,217 bytes is not a config.json", stderr);
    }
}
