using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Models;

/// <summary>
/// A real pretrained model: Karpathy's stories260K (../shared/fixtures/real/tinystories-260k/hf; skipped with a
/// printed reason when absent). Greedy generation from BOS + prompt equals the float64 reference's greedy ids and
/// llama2.c's own output, and what `peft generate` prints is the tokenizer's decode of those ids.
/// </summary>
[Collection("console")]   // runs the CLI, which writes to the process-wide console
public class TinyStoriesRealWeightsTests(ITestOutputHelper output)
{
    const string Fixture = "tinystories-260k/hf";

    static List<int> ReferenceGreedy(ReferenceLlama reference, int[] prompt, int steps, IReadOnlySet<int> stop)
    {
        var seq = prompt.ToList();
        var produced = new List<int>();
        for (int s = 0; s < steps; s++)
        {
            var logits = reference.Forward(seq.ToArray());
            int last = seq.Count - 1, best = 0;
            for (int v = 1; v < logits.GetLength(1); v++) if (logits[last, v] > logits[last, best]) best = v;
            produced.Add(best);
            seq.Add(best);
            if (stop.Contains(best)) break;
        }
        return produced;
    }

    [Theory]
    [InlineData("Lily and Tom")]
    [InlineData("nce upon a time, a dog")]   // starts mid-word
    [InlineData("")]                         // BOS alone, as HF and llama2.c start
    public void GreedyIdsEqualTheFloat64ReferenceAndThePrintedTextIsTheirDecode(string prompt)
    {
        if (RealFixtures.Folder(Fixture, output) is not { } dir) return;
        const int steps = 30;
        int[] promptIds;
        List<int> ids;
        string expectedText;
        using (var model = ModelLoader.Load(dir))
        using (var tok = TextTokenizer.FromFolder(dir, model.Config))
        {
            promptIds = tok.Encode(prompt, addSpecialTokens: true);
            Assert.Equal(1, promptIds[0]);   // tokenizer_config.json: add_bos_token, <s> = 1
            var stop = tok.StopIds(model.Config);
            ids = TextGenerator.Generate(model, promptIds, new SamplingOptions { MaxNewTokens = steps }, stop).ToList();
            Assert.Equal(ReferenceGreedy(new ReferenceLlama(dir), promptIds, steps, stop.ToHashSet()), ids);
            expectedText = tok.Decode([.. promptIds, .. ids]);
        }
        var (code, stdout, stderr) = CliCapture.Run("generate", "--model", dir, "--prompt", prompt, "--max-new-tokens", $"{steps}", "--temperature", "0");
        Assert.True(code == 0, stderr);
        Assert.Equal(expectedText + Environment.NewLine, stdout);
        output.WriteLine(stdout);
    }

    [Fact]
    public void GenerateKeepsTheSpaceAfterThePrompt()
    {
        if (RealFixtures.Folder(Fixture, output) is not { } dir) return;
        var (code, stdout, stderr) = CliCapture.Run("generate", "--model", dir, "--prompt", "Lily and Tom", "--max-new-tokens", "6", "--temperature", "0");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("Lily and Tom were playing", stdout);
    }

    [Fact]
    public void AnEmptyPromptWithoutBosIsOneClearError()
    {
        // The bundled fixture's tokenizer adds no BOS, so there is nothing to start from.
        var (code, stdout, stderr) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--prompt", "");
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains("--prompt", stderr);
        Assert.Contains("adds no BOS", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    /// <summary>llama2.c's CI (test_all.py expected_stdout): run.c, temperature 0, 200 steps from BOS, a token each.</summary>
    [Fact]
    public void FromBosTheTextIsLlama2cs()
    {
        if (RealFixtures.Folder(Fixture, output) is not { } dir) return;
        string expected = File.ReadAllText(Path.Combine(RealFixtures.Goldens, "llama2c-stories260K-expected.txt"));
        using var model = ModelLoader.Load(dir);
        using var tok = TextTokenizer.FromFolder(dir, model.Config);
        int[] bos = tok.Encode("", addSpecialTokens: true);
        var ids = TextGenerator.Generate(model, bos, new SamplingOptions { MaxNewTokens = 200 }, tok.StopIds(model.Config)).ToList();
        var streamer = new TextStreamer(tok, bos);
        string streamed = string.Concat(ids.Select(streamer.Push)) + streamer.Flush();
        Assert.Equal(expected, tok.Decode([.. bos, .. ids]));
        Assert.Equal(expected, streamed);
    }
}
