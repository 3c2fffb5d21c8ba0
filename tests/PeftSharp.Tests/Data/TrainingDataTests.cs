using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Tests.Data;

public class TrainingDataTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);

    static string Task(int n)
    {
        string path = Path.Combine(TestPaths.TempDir(), "t.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, n).Select(i => $"{{\"prompt\": \"p{i}:\", \"completion\": \" c{i}\"}}"));
        return path;
    }

    [Fact]
    public void EvalSplitIsSeededDisjointAndFeedsExactMatchPrompts()
    {
        string path = Task(8);
        var d = TrainingData.Load(path, Tok, maxLength: 32, packing: false, evalSplit: 0.25, seed: 3);
        Assert.Equal(6, d.Train.Count);
        Assert.Equal(2, d.Eval.Count);
        Assert.Equal(2, d.EvalPrompts.Count);
        var evalPrompts = d.EvalPrompts.Select(p => Tok.Decode(p.Prompt)).ToList();
        var trainTexts = d.Train.Select(s => Tok.Decode(s.Ids)).ToList();
        foreach (var p in evalPrompts) Assert.DoesNotContain(trainTexts, t => t.StartsWith(p + " "));
        var again = TrainingData.Load(path, Tok, 32, false, evalSplit: 0.25, seed: 3);
        Assert.Equal(evalPrompts, again.EvalPrompts.Select(p => Tok.Decode(p.Prompt)));
        Assert.Equal(" c" + evalPrompts[0][1..^1], Tok.Decode(d.EvalPrompts[0].Answer)); // "p3:" answers " c3"
    }

    [Fact]
    public void EvalSplitIsFixedForever()
    {
        // The eval prompts, then the training rows, in the order the seeded shuffle put them.
        var d = TrainingData.Load(Task(10), Tok, 32, packing: false, evalSplit: 0.3, seed: 3);
        Assert.Equal("p6: p3: p2: p0 p7 p8 p9 p1 p5 p4", string.Join(" ", d.EvalPrompts.Select(p => Tok.Decode(p.Prompt)).Concat(d.Train.Select(s => Tok.Decode(s.Ids).Split(':')[0]))));
    }

    [Fact]
    public void EvalFileIsUsedAsIsAndBadSplitsAreRejected()
    {
        var d = TrainingData.Load(Task(4), Tok, 32, packing: true, evalPath: Task(3));
        Assert.Equal(3, d.Eval.Count); // eval is never packed
        Assert.Single(d.Train);         // 4 short examples packed into one sequence
        Assert.Throws<InvalidDataException>(() => TrainingData.Load(Task(2), Tok, 32, false, evalSplit: 0.1));
        Assert.Throws<ArgumentException>(() => TrainingData.Load(Task(2), Tok, 32, false, evalSplit: 1.5));
    }
}
