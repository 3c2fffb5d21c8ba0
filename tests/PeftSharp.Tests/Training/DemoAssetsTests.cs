using PeftSharp.Data;
using PeftSharp.Demo;

namespace PeftSharp.Tests.Training;

static class DemoAssetsTestsPaths
{
    public static string RepoRoot
    {
        get
        {
            var d = new DirectoryInfo(AppContext.BaseDirectory);
            while (d is not null && !File.Exists(Path.Combine(d.FullName, "PeftSharp.sln"))) d = d.Parent;
            return d?.FullName ?? throw new DirectoryNotFoundException("repository root not found above " + AppContext.BaseDirectory);
        }
    }
}

public class DemoAssetsTests
{
    static string RepoRoot => DemoAssetsTestsPaths.RepoRoot;

    static readonly string[] Generated = ["pretrain.txt", "heldout.txt", "train.jsonl", "eval.jsonl", "preference-train.jsonl", "preference-eval.jsonl", "README.md", "base/tokenizer.json", "base/config.json"];

    [Fact]
    public void GeneratorIsDeterministicAndMatchesTheCommittedAssets()
    {
        string a = TestPaths.TempDir(), b = TestPaths.TempDir();
        DemoAssets.WriteData(a);
        DemoAssets.WriteData(b);
        string committed = Path.Combine(RepoRoot, "assets", "demo");
        foreach (var f in Generated)
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(a, f)), File.ReadAllBytes(Path.Combine(b, f)));
            Assert.True(File.ReadAllBytes(Path.Combine(a, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(committed, f))),
                $"assets/demo/{f} differs from `peft make-demo` output: regenerate it");
        }
    }

    [Fact]
    public void TaskIsNewToTheBaseAndLearnableFromItsTrainingSplit()
    {
        string dir = TestPaths.TempDir();
        DemoAssets.WriteData(dir);
        var train = DatasetReader.Read(Path.Combine(dir, "train.jsonl")).Select(x => x.PromptAndAnswer!.Value).ToList();
        var eval = DatasetReader.Read(Path.Combine(dir, "eval.jsonl")).Select(x => x.PromptAndAnswer!.Value).ToList();
        Assert.Equal(512 - DemoAssets.EvalExamples, train.Count);
        Assert.Equal(DemoAssets.EvalExamples, eval.Count);
        Assert.Empty(train.Select(t => t.Prompt).Intersect(eval.Select(e => e.Prompt)));

        // Every (slot, word -> code) pair needed by eval is shown in training, always with the same code.
        var seen = new Dictionary<(int, string), string>();
        foreach (var (p, c) in train)
        {
            var words = p.Split(' ')[1..4];
            var codes = c.Trim().Split(' ');
            for (int i = 0; i < 3; i++)
            {
                if (seen.TryGetValue((i, words[i]), out var prev)) Assert.Equal(prev, codes[i]);
                seen[(i, words[i])] = codes[i];
            }
        }
        foreach (var (p, c) in eval)
            Assert.Equal(c.Trim(), string.Join(" ", p.Split(' ')[1..4].Select((w, i) => seen[(i, w)])));

        // The pretraining corpus never shows the task's format.
        string corpus = File.ReadAllText(Path.Combine(dir, "pretrain.txt"));
        Assert.DoesNotContain("->", corpus);
        Assert.DoesNotContain("code", corpus);
    }
}

public class DemoBaseModelTests
{
    static string Demo => Path.Combine(DemoAssetsTestsPaths.RepoRoot, "assets", "demo");

    [Fact]
    public void CommittedBaseKnowsTheCorpusButNotTheTask()
    {
        string baseDir = Path.Combine(Demo, "base");
        var tok = PeftSharp.Models.TextTokenizer.Load(baseDir);
        using var model = PeftSharp.Models.ModelLoader.Load(baseDir);
        Assert.InRange(model.ParameterCount(), 2_000_000, 6_000_000);
        Assert.True(new FileInfo(Path.Combine(baseDir, "model.safetensors")).Length < 10_000_000);

        var heldout = TrainingData.Load(Path.Combine(Demo, "heldout.txt"), tok, 128, packing: true);
        var onText = PeftSharp.Training.Evaluator.Run(model, heldout.Train.Take(24).ToList(), [], tok.EosId, 8);
        Assert.True(onText.Loss < 1.5, $"held-out loss {onText.Loss}"); // a random model scores ln(96) = 4.56

        var task = TrainingData.Load(Path.Combine(Demo, "train.jsonl"), tok, 64, false, evalPath: Path.Combine(Demo, "eval.jsonl"));
        var onTask = PeftSharp.Training.Evaluator.Run(model, task.Eval, task.EvalPrompts, tok.EosId, 16);
        Assert.Equal(0.0, onTask.ExactMatch);
        Assert.Equal(64, onTask.Examples);
    }
}
