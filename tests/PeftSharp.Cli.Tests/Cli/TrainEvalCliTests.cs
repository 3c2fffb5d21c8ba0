using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Cli.Reports;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Memory;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Cli;

/// <summary>`peft train` on bad input, and the folders of every adapter kind through generate, logits and eval.</summary>
[Collection("console")]
public class TrainEvalCliTests
{
    /// <summary>`train` on the tiny model with short-run defaults; a flag in <paramref name="extra"/> replaces its default (a flag given twice is an error).</summary>
    static string[] Train(string data, string outDir, params string[] extra) =>
        ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", outDir, .. Defaults(extra, ("--steps", "3"), ("--batch", "4"), ("--max-seq", "32")), .. extra];

    /// <summary>Each default flag and value that <paramref name="extra"/> does not give.</summary>
    internal static IEnumerable<string> Defaults(string[] extra, params (string Flag, string Value)[] defaults) =>
        defaults.Where(d => !extra.Contains(d.Flag)).SelectMany(d => new[] { d.Flag, d.Value });

    /// <summary>Training sequences longer than the model's context train, with one warning naming the length and the context.</summary>
    [Fact]
    public void TrainingPastTheModelsContextIsAWarning()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "long.jsonl");
        string story = string.Join(" ", Enumerable.Repeat("the little cat sat on the warm mat and looked at the sun", 30));
        File.WriteAllLines(data, [System.Text.Json.JsonSerializer.Serialize(new { text = story }), "{\"text\": \"short\"}"]);
        var (code, stdout, err) = CliCapture.Run(Train(data, Path.Combine(dir, "out"), "--method", "lora", "--max-seq", "200", "--steps", "1"));
        Assert.True(code == 0, err);
        // Spectre's colours out, its line wraps (a trailing space, a newline) back to one space.
        string plain = CliCapture.Plain(stdout);
        Assert.Contains("warning: the longest training sequence (200 tokens) is past the model's context (max_position_embeddings 128): positions after 128 were never trained; --max-seq 128 keeps within it", plain);
        (code, stdout, err) = CliCapture.Run(Train(data, Path.Combine(dir, "out2"), "--method", "lora", "--max-seq", "64", "--steps", "1"));
        Assert.True(code == 0, err);
        Assert.DoesNotContain("past the model's context", stdout);
    }

    /// <summary>
    /// `eval` on an example longer than --max-seq scores its first --max-seq tokens only, and one past the model's context
    /// is scored at positions never trained: both change the perplexity, so both are warnings (they were silent).
    /// </summary>
    [Fact]
    public void EvalSaysWhatItTruncatedAndWhatIsPastTheContext()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "long.jsonl");
        string story = string.Join(" ", Enumerable.Repeat("the little cat sat on the warm mat and looked at the sun", 30));
        File.WriteAllLines(data, [System.Text.Json.JsonSerializer.Serialize(new { text = story }), "{\"text\": \"short\"}",
            System.Text.Json.JsonSerializer.Serialize(new { prompt = story, completion = " yes" })]);
        var (code, stdout, err) = CliCapture.Run("eval", "--model", TestPaths.TinyLlama, "--data", data, "--max-seq", "200");
        Assert.True(code == 0, err);
        Assert.Matches(@"warning: 2 example\(s\) longer than --max-seq 200 were truncated \(\d+ tokens cut\): perplexity covers their first 200 tokens only", CliCapture.Plain(stdout));
        Assert.Contains("warning: 1 example(s) left out: nothing to score within --max-seq 200", CliCapture.Plain(stdout));
        Assert.Contains("warning: the longest eval sequence (200 tokens) is past the model's context (max_position_embeddings 128)", CliCapture.Plain(stdout));
        File.WriteAllLines(data, ["{\"text\": \"short\"}"]);
        (code, stdout, err) = CliCapture.Run("eval", "--model", TestPaths.TinyLlama, "--data", data);
        Assert.True(code == 0, err);
        Assert.DoesNotContain("warning", stdout);
    }

    /// <summary>A prompt-tuning adapter's virtual tokens count toward the context: 120 tokens fit the fixture's 128
    /// positions, 120 + 20 do not, and only the run with the adapter says so.</summary>
    [Fact]
    public void EvalCountsASoftPromptsVirtualTokensAgainstTheContext()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "long.jsonl"), run = Path.Combine(dir, "pt");
        string story = string.Join(" ", Enumerable.Repeat("the little cat sat on the warm mat and looked at the sun", 30));
        File.WriteAllLines(data, [System.Text.Json.JsonSerializer.Serialize(new { text = story })]);
        var (trainCode, _, trainErr) = CliCapture.Run("train", "--method", "prompt", "--model", TestPaths.TinyLlama, "--data", ReversalTask.Write(dir, 4),
            "--out", run, "--steps", "1", "--batch", "2", "--max-seq", "32", "--virtual-tokens", "20", "--eval-interval", "1000");
        Assert.True(trainCode == 0, trainErr);
        var (code, stdout, err) = CliCapture.Run("eval", "--model", TestPaths.TinyLlama, "--data", data, "--max-seq", "120", "--adapter", Path.Combine(run, "final"));
        Assert.True(code == 0, err);
        Assert.Contains("warning: with the adapter's 20 virtual tokens, the longest eval sequence (140 tokens) is past the model's context (max_position_embeddings 128)", CliCapture.Plain(stdout));
        Assert.Contains("--max-seq 108 keeps within it", CliCapture.Plain(stdout));
        (code, stdout, err) = CliCapture.Run("eval", "--model", TestPaths.TinyLlama, "--data", data, "--max-seq", "120");
        Assert.True(code == 0, err);
        Assert.DoesNotContain("past the model's context", CliCapture.Plain(stdout));
    }

    /// <summary>
    /// Full fine-tuning saves a model folder that renders, encodes and stops as its base does: the base's
    /// tokenizer_config.json (chat template, BOS flag) and generation_config.json (stop ids) come along, as merge copies
    /// them (only tokenizer.json did, so `generate --chat` on the result fell back to the simple format).
    /// </summary>
    [Fact]
    public void FullFineTuningKeepsTheBasesTokenizerAndGenerationConfig()
    {
        string dir = TestPaths.TempDir(), baseDir = Path.Combine(dir, "base"), data = ReversalTask.Write(dir, 8), outDir = Path.Combine(dir, "out");
        Directory.CreateDirectory(baseDir);
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json" }) File.Copy(Path.Combine(TestPaths.TinyLlama, f), Path.Combine(baseDir, f));
        File.WriteAllText(Path.Combine(baseDir, "tokenizer_config.json"),
            "{\"add_bos_token\": false, \"chat_template\": \"{% for m in messages %}[{{ m.role }}] {{ m.content }}\\n{% endfor %}\"}");
        File.WriteAllText(Path.Combine(baseDir, "generation_config.json"), "{\"eos_token_id\": [259, 10], \"do_sample\": false}");
        var (code, _, err) = CliCapture.Run("train", "--model", baseDir, "--data", data, "--out", outDir, "--method", "full", "--steps", "1", "--batch", "4", "--max-seq", "32");
        Assert.True(code == 0, err);
        foreach (var f in new[] { "tokenizer_config.json", "generation_config.json", "tokenizer.json" })
            Assert.Equal(File.ReadAllText(Path.Combine(baseDir, f)), File.ReadAllText(Path.Combine(outDir, "final", f)));
    }

    [Fact]
    public void MalformedJsonlNamesFileAndLine()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "bad.jsonl");
        File.WriteAllLines(data, ["{\"text\": \"fine\"}", "{\"text\": \"fine\"}", "{\"text\": oops"]);
        var (code, _, err) = CliCapture.Run(Train(data, Path.Combine(dir, "out"), "--method", "lora"));
        Assert.Equal(1, code);
        Assert.Contains($"{data}:3", err);
        Assert.Contains("malformed JSON", err);
    }

    [Fact]
    public void EmptyDatasetIsRefused()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "empty.jsonl");
        File.WriteAllText(data, "\n\n");
        var (code, _, err) = CliCapture.Run(Train(data, Path.Combine(dir, "out"), "--method", "lora"));
        Assert.Equal(1, code);
        Assert.Contains("empty", err);
        Assert.Contains(data, err);
    }

    /// <summary>Dense LoRA and full fine-tuning on a checkpoint stored in NF4 are refused before anything else is printed (no memory plan first).</summary>
    [Fact]
    public void LoraOnAnNf4CheckpointIsRefusedBeforeThePlan()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), nf4 = Path.Combine(dir, "nf4");
        Assert.Equal(0, CliApp.Run(["quantize", "--model", TestPaths.TinyLlama, "--out", nf4]));
        var (code, stdout, err) = CliCapture.Run(["train", "--model", nf4, "--data", data, "--out", Path.Combine(dir, "out"), "--steps", "1", "--method", "lora"]);
        Assert.Equal(1, code);
        Assert.Contains("--method lora: the model is already quantised (nf4-", err);
        Assert.Equal("", stdout.Trim());   // no compute line, data summary or memory plan of a run that will not start
        Assert.Single(err.Trim().Split('\n'));
        Assert.False(Directory.Exists(Path.Combine(dir, "out")), "a refused run left an output folder");

        (code, stdout, err) = CliCapture.Run(["train", "--model", nf4, "--data", data, "--out", Path.Combine(dir, "out"), "--steps", "1", "--method", "full"]);
        Assert.Equal(1, code);
        Assert.StartsWith("error: full fine-tuning needs a dense model; this one is quantised (nf4-", err.Trim());
        Assert.Equal("", stdout.Trim());
        Assert.Single(err.Trim().Split('\n'));
    }

    [Fact]
    public void ExistingRunFolderIsRefusedWithoutOverwriteOrResume()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), outDir = Path.Combine(dir, "out");
        Assert.Equal(0, CliApp.Run(Train(data, outDir, "--method", "lora", "--steps", "1")));
        var (code, _, err) = CliCapture.Run(Train(data, outDir, "--method", "lora", "--steps", "1"));
        Assert.Equal(1, code);
        Assert.Contains("--overwrite", err);
        Assert.Contains("--resume", err);
        Assert.Equal(0, CliApp.Run(Train(data, outDir, "--method", "lora", "--steps", "1", "--overwrite")));
    }

    [Fact]
    public void ResumeAloneRestoresTheRunsOptionsAndContinuesExactly()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        string[] knobs = ["--method", "lora", "--targets", "q_proj,v_proj", "--rank", "4", "--lr", "0.01", "--steps", "6", "--save-interval", "3", "--schedule", "linear"];
        string whole = Path.Combine(dir, "whole"), cut = Path.Combine(dir, "cut");
        Assert.Equal(0, CliApp.Run(Train(data, whole, knobs)));
        Assert.Equal(0, CliApp.Run(Train(data, cut, knobs)));
        // Make "cut" a run that died after its step-3 checkpoint: no final adapter, nothing past step 3.
        Directory.Delete(Path.Combine(cut, "final"), true);
        foreach (var ckpt in Directory.GetDirectories(Path.Combine(cut, "checkpoints")).Where(d => !d.EndsWith("step-000003"))) Directory.Delete(ckpt, true);

        var (code, _, err) = CliCapture.Run(["train", "--resume", cut]);   // nothing else: the defaults (qlora, r 8) would not fit
        Assert.True(code == 0, err);
        using var a = new SafeTensorsFile(Path.Combine(whole, "final", "adapter_model.safetensors"));
        using var b = new SafeTensorsFile(Path.Combine(cut, "final", "adapter_model.safetensors"));
        var names = a.Tensors.Select(t => t.Name).Order().ToList();
        Assert.Equal(names, b.Tensors.Select(t => t.Name).Order());
        Assert.Equal(2 * 2 * 2, names.Count);   // 2 layers x (q_proj, v_proj) x (A, B): the run's targets, not the default all-linear
        foreach (var name in names)
        {
            using var x = a.Load(name);
            using var y = b.Load(name);
            Assert.Contains(4L, x.shape);        // the run's rank, not the default 8
            Assert.True(x.equal(y).all().item<bool>(), $"{name} differs after resume");
        }
    }

    [Fact]
    public void ResumeReportsOptionsGivenAgainAndRefusesAnUnreadableOptionsFile()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), run = Path.Combine(dir, "run");
        Assert.Equal(0, CliApp.Run(Train(data, run, "--method", "lora", "--rank", "4", "--steps", "4", "--save-interval", "2")));
        Directory.Delete(Path.Combine(run, "final"), true);
        var (resumed, stdout, _) = CliCapture.Run("train", "--resume", Path.Combine(run, "checkpoints", "step-000002"), "--lr", "0.002");
        Assert.Equal(0, resumed);
        Assert.Contains("--lr 0.002", stdout);
        Assert.True(File.Exists(Path.Combine(run, "final", "adapter_model.safetensors")), "resuming from a checkpoint folder writes into its run");

        // A resume that cannot load its checkpoint (rank 8 over a rank-4 run) fails and leaves the run's records as they were.
        string options = Path.Combine(run, "train-options.json"), runJson = Path.Combine(run, "run.json");
        var before = (File.ReadAllText(options), File.ReadAllText(runJson), File.ReadAllText(Path.Combine(run, "metrics.jsonl")));
        var (mismatch, _, why) = CliCapture.Run(["train", "--resume", run, "--rank", "8"]);
        Assert.Equal(1, mismatch);
        Assert.Contains("[4, ", why);
        Assert.Equal(before, (File.ReadAllText(options), File.ReadAllText(runJson), File.ReadAllText(Path.Combine(run, "metrics.jsonl"))));

        File.WriteAllText(options, "{\"rank\": \"four\"");
        var (code, _, err) = CliCapture.Run(["train", "--resume", run]);
        Assert.Equal(1, code);
        Assert.Contains(options, err);
    }

    [Theory]
    [InlineData("prompt")]
    [InlineData("adapter")]
    public void TrainedFolderLoadsInGenerateLogitsAndEval(string method)
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), outDir = Path.Combine(dir, "out");
        Assert.Equal(0, CliApp.Run(Train(data, outDir, "--method", method, "--reduction-factor", "4", "--virtual-tokens", "3", "--lr", "0.05")));
        string adapter = Path.Combine(outDir, "final");
        Assert.Equal(AdapterMethod(method), PeftSharp.Tuners.PeftMethods.ForFolder(adapter));

        Assert.Equal(0, CliApp.Run(["generate", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--prompt", "abc ->", "--max-new-tokens", "4"]));
        string golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors"), output = Path.Combine(dir, "logits.safetensors");
        Assert.Equal(0, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--input", golden, "--output", output]));
        using var mine = new SafeTensorsFile(output);
        using var gold = new SafeTensorsFile(golden);
        using var a = mine.Load("logits");
        using var b = gold.Load("logits");
        Assert.Equal(b.shape, a.shape); // the soft prompt's positions are dropped
        Assert.True(TestPaths.MaxAbsError(a, b) > 1e-4, "the trained adapter changed nothing");
        Assert.Equal(0, CliApp.Run(["eval", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--data", data, "--limit", "4"]));
    }

    [Fact]
    public void PromptTuningPlanCountsTheSoftPromptOnce()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), outDir = Path.Combine(dir, "out");
        var (code, stdout, err) = CliCapture.Run(Train(data, outDir, "--method", "prompt", "--virtual-tokens", "3", "--steps", "1"));
        Assert.True(code == 0, err);
        using var tok = TextTokenizer.Load(TestPaths.TinyLlama);
        int longest = TrainingData.Load(data, tok, 32, packing: false).Train.Max(t => t.Length);
        // The run's rows are planned at their own length; the planner adds the 3 virtual tokens itself.
        Assert.Matches($@"batch\s+4\s+x\s+seq\s+{longest},", stdout);
        var settings = new TrainSettings { Model = TestPaths.TinyLlama, Data = data, Method = "prompt", VirtualTokens = 3, Batch = 4, MaxSeq = 32, Steps = 1 };
        var m = settings.MethodOptions();
        var o = settings.TrainerOptions(outDir);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, RunSummary.JsonFile)))!;
        // The run plans with its own process's resident set once libtorch loaded (the first runtime term).
        long afterLoad = summary["runtime_bytes"]!.GetValue<long>();
        Assert.True(afterLoad > 0);
        var once = MemoryPlanner.Plan(ModelShape.Load(Path.Combine(TestPaths.TinyLlama, "config.json")), RunPlan.Request(m, o, longest, afterLoad));
        Assert.Equal(once.TotalBytes, summary["planned_bytes"]!.GetValue<long>());
    }

    static PeftSharp.Tuners.IPeftMethod AdapterMethod(string method) =>
        method == "prompt" ? PeftSharp.Tuners.PromptTuning.PromptTuningMethod.Instance : PeftSharp.Tuners.Houlsby.HoulsbyMethod.Instance;

    [Fact]
    public void QloraAdapterAppliesToTheDenseBaseItWasQuantisedFromWithAWarning()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), outDir = Path.Combine(dir, "out");
        Assert.Equal(0, CliApp.Run(Train(data, outDir, "--method", "qlora", "--rank", "4")));
        string golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors"), output = Path.Combine(dir, "logits.safetensors");
        var (code, _, err) = CliCapture.Run("logits", "--model", TestPaths.TinyLlama, "--adapter", Path.Combine(outDir, "final"), "--input", golden, "--output", output);
        Assert.Equal(0, code);
        Assert.Contains("quantised copy of this base", err);

        // A different dense base (one weight changed) is still refused: the check re-quantises, it does not skip.
        string other = Path.Combine(dir, "other");
        Directory.CreateDirectory(other);
        foreach (var f in Directory.GetFiles(TestPaths.TinyLlama)) File.Copy(f, Path.Combine(other, Path.GetFileName(f)));
        using (var src = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "model.safetensors")))
        {
            var tensors = src.Tensors.Select(t => (t.Name, src.Load(t.Name))).ToList();
            using (no_grad()) ScalarArgs.With(1.5, s => tensors.First(t => t.Name == "model.layers.0.self_attn.q_proj.weight").Item2.mul_(s));
            SafeTensorsWriter.Write(Path.Combine(other, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var (_, t) in tensors) t.Dispose();
        }
        var (code2, _, err2) = CliCapture.Run("logits", "--model", other, "--adapter", Path.Combine(outDir, "final"), "--input", golden, "--output", output);
        Assert.Equal(1, code2);
        Assert.Contains("different base model", err2);
    }
}
