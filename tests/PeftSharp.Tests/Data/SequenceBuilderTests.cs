using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Tests.Data;

public class SequenceBuilderTests
{
    // The fixture tokenizer is byte-level with one merge family ("the"): ASCII letters are single tokens.
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);
    const int I = TokenSequence.Ignore, Eos = 259;

    [Fact]
    public void LossTokensAreTheLabelsFromPositionOneOn()
    {
        Assert.Equal(2, new TokenSequence([1, 2, 3, 4], [1, I, 3, 4]).LossTokens); // position 0 has no context
        Assert.Equal(0, new TokenSequence([1], [1]).LossTokens);
        var s = SequenceBuilder.Tokenize(RawExample.PromptCompletion("ab", "cd", "x"), Tok, Eos);
        Assert.Equal(3, s.LossTokens); // c, d, EOS
    }

    [Fact]
    public void PromptIsMaskedCompletionAndEosCarryLoss()
    {
        var s = SequenceBuilder.Tokenize(RawExample.PromptCompletion("ab", "cd", "x"), Tok, Eos);
        int a = Tok.Encode("a")[0], b = Tok.Encode("b")[0], c = Tok.Encode("c")[0], d = Tok.Encode("d")[0];
        Assert.Equal([a, b, c, d, Eos], s.Ids);
        Assert.Equal([I, I, c, d, Eos], s.Labels);
    }

    [Fact]
    public void ChatMasksEverythingButAssistantContent()
    {
        var ex = new RawExample(ChatFormat.Render([("user", "q"), ("assistant", "r")]), "x");
        var s = SequenceBuilder.Tokenize(ex, Tok, Eos);
        int trained = s.Labels.Count(l => l != I);
        Assert.Equal(2, trained); // "r" and EOS
        Assert.Equal(Tok.Encode("r")[0], s.Labels[^2]);
        Assert.Equal("<|user|>\nq\n<|assistant|>\nr", Tok.Decode(s.Ids[..^1]));
    }

    [Fact]
    public void TruncationIsCountedAndPackingFillsSequences()
    {
        var examples = new[] { "abcdefghij", "ab", "cd", "ef" }.Select(t => RawExample.Text(t, "x")).ToList();
        var (seqs, stats) = SequenceBuilder.Build(examples, Tok, maxLength: 8, packing: false);
        Assert.Equal(4, seqs.Count);
        Assert.Equal(1, stats.Truncated);
        Assert.Equal(3, stats.TokensCut); // 10 letters + EOS = 11 tokens, cut to 8
        Assert.Equal(8, seqs[0].Length);

        var (packed, pstats) = SequenceBuilder.Build(examples, Tok, maxLength: 8, packing: true);
        // [8] then "ab<eos>cd<eos>" (6) then "ef<eos>" (3 would make 9 > 8)
        Assert.Equal([8, 6, 3], packed.Select(p => p.Length));
        Assert.Equal(stats.Tokens, pstats.Tokens);
        Assert.Equal([.. Tok.Encode("ab"), Eos, .. Tok.Encode("cd"), Eos], packed[1].Ids);
    }

    [Fact]
    public void ExamplesLeftWithoutLossAreDroppedAndCounted()
    {
        var examples = new[] { RawExample.PromptCompletion("abcdefgh", "z", "x"), RawExample.Text("ok", "y") };
        var (seqs, stats) = SequenceBuilder.Build(examples, Tok, maxLength: 4, packing: false);
        Assert.Single(seqs);
        Assert.Equal(1, stats.DroppedNoLoss);
        Assert.Contains("1 dropped", stats.ToString());
    }
}
