using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training.Preference;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>Preference JSONL: both shapes, loss only on the response, and every bad input named by file:line.</summary>
public class PreferenceDataTests
{
    static string Write(params string[] lines)
    {
        string path = Path.Combine(TestPaths.TempDir(), "prefs.jsonl");
        File.WriteAllLines(path, lines);
        return path;
    }

    static string Msg(string role, string content) => $"{{\"role\":\"{role}\",\"content\":\"{content}\"}}";

    [Fact]
    public void StandardPairLearnsOnlyTheResponseAndEos()
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        string path = Write("{\"prompt\":\"2+2=\",\"chosen\":\" 4\",\"rejected\":\" 5!\"}");
        var (pairs, stats) = PreferenceData.Tokenize(PreferenceReader.Read(path), tok, 64);
        var p = Assert.Single(pairs);
        Assert.Equal(0, stats.Truncated + stats.Dropped);
        Assert.Equal(tok.Prefix.Length + tok.Encode("2+2=").Length, p.PromptLength);
        foreach (var (seq, response) in new[] { (p.Chosen, " 4"), (p.Rejected, " 5!") })
        {
            Assert.All(seq.Labels[..p.PromptLength], l => Assert.Equal(TokenSequence.Ignore, l));
            Assert.Equal([.. tok.Encode(response), tok.EosId!.Value], seq.Labels[p.PromptLength..]);
            Assert.Equal(seq.Ids[..p.PromptLength], p.Chosen.Ids[..p.PromptLength]);   // both sides share the prompt tokens
        }
    }

    /// <summary>
    /// Each side is prompt + response encoded whole, as SFT examples: with a SentencePiece tokenizer (stories260K) the
    /// response " time" encoded apart was "▁", "▁time"-like pieces the model never produces after "Once upon a".
    /// </summary>
    [Fact]
    public void PairSidesAreEncodedWholeSoASentencePieceResponseGetsNoExtraSpace()
    {
        if (RealFixtures.Folder("tinystories-260k") is not { } real) return;
        using var tok = TextTokenizer.FromFolder(Path.Combine(real, "hf"));
        string path = Write("{\"prompt\":\"Once upon a\",\"chosen\":\" time\",\"rejected\":\" big dog\"}");
        var p = Assert.Single(PreferenceData.Tokenize(PreferenceReader.Read(path), tok, 64).Pairs);
        int[] prompt = tok.Encode("Once upon a", addSpecialTokens: true);
        Assert.Equal(prompt.Length, p.PromptLength);
        foreach (var (seq, response) in new[] { (p.Chosen, " time"), (p.Rejected, " big dog") })
        {
            Assert.Equal([.. tok.Encode("Once upon a" + response, addSpecialTokens: true), tok.EosId!.Value], seq.Ids);
            Assert.Equal(prompt, seq.Ids[..p.PromptLength]);
            Assert.Equal(seq.Ids[p.PromptLength..], seq.Labels[p.PromptLength..]);
        }
    }

    [Fact]
    public void ConversationalPairsShareTheirPromptPrefixAndLearnOnlyTheAssistantReply()
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        string path = Write($"{{\"chosen\":[{Msg("user", "hi")},{Msg("assistant", "hello")}],\"rejected\":[{Msg("user", "hi")},{Msg("assistant", "go")}]}}");
        var pair = Assert.Single(PreferenceReader.Read(path));
        // Rendered by the one rendering function: ChatFormat's text for the whole conversation.
        Assert.Equal(ChatFormat.Render([("user", "hi"), ("assistant", "hello")], addGenerationPrompt: false),
            string.Concat(pair.Prompt.Concat(pair.Chosen).Select(s => s.Text)));
        Assert.All(pair.Prompt, s => Assert.False(s.Trainable));
        Assert.Equal(["hello"], pair.Chosen.Where(s => s.Trainable).Select(s => s.Text));
        var (pairs, _) = PreferenceData.Tokenize([pair], tok, 128);
        var learned = pairs[0].Rejected.Labels.Where(l => l != TokenSequence.Ignore).ToArray();
        Assert.Equal([.. tok.Encode("go"), tok.EosId!.Value], learned);
    }

    [Theory]
    [InlineData("{\"prompt\":\"p\",\"chosen\":\"\",\"rejected\":\" x\"}", "'chosen' is an empty response")]
    [InlineData("{\"prompt\":\"p\",\"chosen\":\" x\",\"rejected\":\"  \"}", "'rejected' is an empty response")]
    [InlineData("{\"prompt\":\"p\",\"chosen\":\" same\",\"rejected\":\" same\"}", "the same response")]
    [InlineData("{\"prompt\":\"p\",\"chosen\":\" x\"}", "needs 'chosen' and 'rejected'")]
    [InlineData("{\"chosen\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}],\"rejected\":[{\"role\":\"user\",\"content\":\"c\"},{\"role\":\"assistant\",\"content\":\"d\"}]}", "do not share a prompt prefix")]
    [InlineData("{\"chosen\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}],\"rejected\":[{\"role\":\"user\",\"content\":\"a\"}]}", "'rejected' has an empty response")]
    [InlineData("{\"chosen\":[{\"role\":\"user\",\"content\":\"a\"}],\"rejected\":\" b\"}", "must be a list of messages")]
    public void BadPairFailsNamingFileAndLine(string badLine, string cause)
    {
        string path = Write("{\"prompt\":\"p\",\"chosen\":\" a\",\"rejected\":\" b\"}", "", badLine);
        var e = Assert.Throws<InvalidDataException>(() => PreferenceReader.Read(path));
        Assert.Contains($"{path}:3: ", e.Message);
        Assert.Contains(cause, e.Message);
    }

    [Fact]
    public void OverlongResponsesAreCutAndCounted_PromptsThatFillMaxSeqAreDropped()
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        string longText = string.Concat(Enumerable.Repeat(" word", 40));
        string path = Write(
            "{\"prompt\":\"ok\",\"chosen\":\" a\",\"rejected\":\" b\"}",
            $"{{\"prompt\":\"ok\",\"chosen\":\"{longText}\",\"rejected\":\" b{longText}\"}}",
            $"{{\"prompt\":\"{longText}\",\"chosen\":\" a\",\"rejected\":\" b\"}}");
        var (pairs, stats) = PreferenceData.Tokenize(PreferenceReader.Read(path), tok, 24);
        Assert.Equal(2, pairs.Count);
        Assert.Equal(1, stats.Truncated);
        Assert.Equal($"{path}:2", stats.FirstTruncated);
        Assert.Equal(1, stats.Dropped);
        Assert.Equal($"{path}:3", stats.FirstDropped);
        Assert.All(pairs, p => Assert.True(p.Chosen.Length <= 24 && p.Rejected.Length <= 24));
        Assert.Contains($"{path}:2", stats.ToString());
    }
}
