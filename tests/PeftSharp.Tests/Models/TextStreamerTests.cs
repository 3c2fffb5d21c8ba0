using System.Text;
using PeftSharp.Generation;

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
}
