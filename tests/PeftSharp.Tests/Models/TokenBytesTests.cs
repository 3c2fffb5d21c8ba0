using System.Text;
using System.Text.Unicode;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Models;

/// <summary>
/// <see cref="PeftSharp.Models.TextTokenizer.TokenBytes"/> against HF's own decoder (the tokenizers library
/// Tokenizers.DotNet wraps), for every tokenizer family in the real fixtures: a token whose bytes are whole characters
/// reads as its decode([id]) (which strips the leading space of a text's first token, as Llama's Strip decoder does),
/// and the bytes of the tokens of a text with characters split over byte tokens join to the UTF-8 of its decode.
/// </summary>
public class TokenBytesTests(ITestOutputHelper output)
{
    static bool SameUpToFirstSpace(string fromBytes, string decoded) =>
        fromBytes == decoded || fromBytes.StartsWith(' ') && fromBytes[1..] == decoded;

    [Theory]
    [MemberData(nameof(TextStreamerFidelityTests.Families), MemberType = typeof(TextStreamerFidelityTests))]
    public void EveryTokensBytesAreWhatHfDecodesItAs(string name)
    {
        if (RealFixtures.Tokenizer(name, output) is not { } where) return;
        using var tok = RealFixtures.Load(where);
        int whole = 0, partial = 0;
        for (int id = 0; id < tok.VocabSize; id++)
        {
            byte[] bytes = tok.TokenBytes(id);
            if (!Utf8.IsValid(bytes)) { partial++; continue; }
            string decoded = tok.Decode([id]);
            Assert.True(SameUpToFirstSpace(Encoding.UTF8.GetString(bytes), decoded), $"id {id}: bytes [{Convert.ToHexString(bytes)}], HF decodes '{decoded}'");
            whole++;
        }
        output.WriteLine($"{name}: {whole} tokens read as HF decodes them, {partial} are parts of characters");
        Assert.True(partial > 0, "no token is part of a character");   // byte fallback <0xXX> / byte-level single bytes

        // Texts whose characters the vocabulary splits: the tokens' bytes joined are the decode's UTF-8.
        foreach (string text in new[] { "Café 😀 中文 🦙 naïve", "ẞ𝄞 🧪 ℵ₀ — 日本語のテキスト" })
        {
            int[] ids = tok.Encode(text);
            Assert.Contains(ids, id => !Utf8.IsValid(tok.TokenBytes(id)));
            string joined = Encoding.UTF8.GetString(ids.SelectMany(tok.TokenBytes).ToArray());
            Assert.True(SameUpToFirstSpace(joined, tok.Decode(ids)), $"'{joined}' vs '{tok.Decode(ids)}'");
        }
    }
}
