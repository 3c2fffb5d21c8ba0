using System.Text;
using PeftSharp.Generation;
using PeftSharp.Models;

namespace PeftSharp.Tests.Models;

/// <summary>TextStreamer over a byte-level decode (each id one UTF-8 byte), as the server and `peft generate` use it.</summary>
public class TextStreamerTests
{
    static string Bytes(IReadOnlyList<int> ids) => Encoding.UTF8.GetString(ids.Select(i => (byte)i).ToArray());

    [Fact]
    public void SplitCharactersAreHeldBackUntilComplete()
    {
        var s = new TextStreamer(Bytes);
        Assert.Equal("a", s.Push('a'));
        Assert.Equal("", s.Push(0xC3));      // first byte of é
        Assert.Equal("é", s.Push(0xA9));
        Assert.Equal("", s.Push(0xE2));      // first two bytes of €
        Assert.Equal("", s.Push(0x82));
        Assert.Equal("€b", s.Push(0xAC) + s.Push('b'));
        Assert.Equal("", s.Flush());
        Assert.Equal("aé€b", s.Text);
    }

    [Fact]
    public void AnUnfinishedCharacterAtTheEndIsFlushedAsDecoded()
    {
        var s = new TextStreamer(Bytes);
        Assert.Equal("x", s.Push('x'));
        Assert.Equal("", s.Push(0xF0));
        Assert.Equal("\uFFFD", s.Flush());
        Assert.Equal("", s.Flush());
    }

    [Fact]
    public void CleanedUpSpacesStreamAsTheWholeTextCleansUp()
    {
        // Random texts dense in what the clean-up touches (" .", " n't", " ' ", runs of spaces, the cascades where
        // " ' " leaves " 'v" that " 've" completes), cut into random pieces and random prompts: the streamed text is
        // always the cleaned whole minus the cleaned prompt, as TextTokenizer.Decode slices it.
        const string alphabet = "   .,!?''ntvemrsx";
        var rng = new Random(11);
        for (int n = 0; n < 30000; n++)
        {
            var bytes = Enumerable.Range(0, rng.Next(1, 12)).Select(_ => (int)alphabet[rng.Next(alphabet.Length)]).ToArray();
            int split = rng.Next(0, bytes.Length);
            string Clean(IReadOnlyList<int> ids) => TokenizationSpaces.CleanUp(Bytes(ids));
            var s = new TextStreamer(Bytes, bytes[..split], cleanUpSpaces: true);
            var shown = string.Concat(bytes[split..].Select(s.Push)) + s.Flush();
            string full = Clean(bytes), prompt = Clean(bytes[..split]);
            Assert.Equal(full[Math.Min(prompt.Length, full.Length)..], shown);
            Assert.Equal(shown, s.Text);
        }
    }

    [Fact]
    public void ATrailingSpaceWaitsForTheNextPiece()
    {
        var s = new TextStreamer(Bytes, cleanUpSpaces: true);
        Assert.Equal("Hi", s.Push('H') + s.Push('i') + s.Push(' '));
        Assert.Equal(".", s.Push('.'));          // " ." became "."
        Assert.Equal("", s.Push(' '));
        Assert.Equal(" ok", s.Push('o') + s.Push('k'));
        Assert.Equal("", s.Push(' ') + s.Push('n'));
        Assert.Equal(" no", s.Push('o'));        // " n" was not " n't"
        Assert.Equal("", s.Push(' '));
        Assert.Equal(" ", s.Flush());            // the end decides: the space stays
        Assert.Equal("Hi. ok no ", s.Text);

        // A cascade: " ' " deletes the quote's spaces, leaving " 'v" that " 've" then completes.
        var c = new TextStreamer(Bytes, cleanUpSpaces: true);
        string shown = string.Concat("a  ' v".Select(ch => c.Push(ch)));
        Assert.Equal("a", shown);
        Assert.Equal("'ve", c.Push('e') + c.Flush());
        Assert.Equal(TokenizationSpaces.CleanUp("a  ' ve"), c.Text);
        Assert.Equal("a've", c.Text);
    }
}
