using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Models;

/// <summary>
/// tokenizer_config.json's clean_up_tokenization_spaces, as HF's decode applies it: full decodes and streamed text
/// equal transformers.js's decode of fixed id lists (Fixtures/text-goldens/cleanup-golden.json, made by
/// make-cleanup-goldens.mjs there): Llama-3.1 (its config enables the flag), TinyStories with a config that enables
/// it (small vocabulary: " ." and " n't" span tokens), SmolLM (its config disables it: text unchanged).
/// </summary>
public class CleanUpTokenizationSpacesTests(ITestOutputHelper output)
{
    public static TheoryData<string> Sets => ["llama-3.1", "tinystories-260k", "smollm-135m"];

    static JsonObject Golden(string name) => RealFixtures.Golden("cleanup-golden.json")[name]!.AsObject();

    /// <summary>A copy of TinyStories' tokenizer.json beside its tokenizer_config.json with the flag set as given (or removed).</summary>
    static TextTokenizer TinyStoriesWithFlag((string Folder, string File) where, bool? flag)
    {
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(where.Folder, where.File), Path.Combine(dir, "tokenizer.json"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(where.Folder, "tokenizer_config.json")))!.AsObject();
        config.Remove("clean_up_tokenization_spaces");
        if (flag is bool f) config["clean_up_tokenization_spaces"] = f;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        return TextTokenizer.Load(dir);
    }

    TextTokenizer? Load(string name)
    {
        if (RealFixtures.Tokenizer(name, output) is not { } where) return null;
        // TinyStories' config has no such key (false, as Python transformers defaults it); the golden enables it.
        return name == "tinystories-260k" ? TinyStoriesWithFlag(where, true) : RealFixtures.Load(where);
    }

    static string Stream(TextTokenizer tok, int[] prompt, IEnumerable<int> generated)
    {
        var s = new TextStreamer(tok, prompt);
        var deltas = generated.Select(s.Push).ToList();
        deltas.Add(s.Flush());
        Assert.Equal(string.Concat(deltas), s.Text);
        return s.Text;
    }

    static int[] Ids(JsonNode c) => c["ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();

    [Theory]
    [MemberData(nameof(Sets))]
    public void FullDecodeOfEveryPrefixEqualsHf(string name)
    {
        using var tok = Load(name);
        if (tok is null) return;
        var golden = Golden(name);
        Assert.Equal(golden["clean_up_tokenization_spaces"]!.GetValue<bool>(), tok.CleanUpTokenizationSpaces);
        int compared = 0, cleaned = 0;
        foreach (var c in golden["cases"]!.AsArray())
        {
            int[] ids = Ids(c!);
            var prefixes = c!["prefixes"]!.AsArray().Select(x => x!.GetValue<string>()).ToArray();
            for (int p = 0; p <= ids.Length; p++)
            {
                // A prefix that ends inside a multi-byte character: transformers.js writes one U+FFFD per invalid
                // sequence where HF's Rust decoder (ours and Python's) writes one per byte.
                if (prefixes[p].Contains('\uFFFD')) continue;
                Assert.Equal(prefixes[p], tok.Decode(ids[..p]));
                compared++;
            }
            if (c["raw"]!.GetValue<string>() != prefixes[^1]) cleaned++;
        }
        output.WriteLine($"{name}: {compared} prefix decodes equal HF's; {cleaned} texts changed by the clean-up");
        // The flag's sets must really exercise the clean-up; the flag-false set must leave every text as decoded.
        if (tok.CleanUpTokenizationSpaces) Assert.True(cleaned >= 6, $"only {cleaned} texts changed");
        else Assert.Equal(0, cleaned);
    }

    [Theory]
    [MemberData(nameof(Sets))]
    public void StreamedTextAfterAnyPromptEqualsTheFullDecodesContinuation(string name)
    {
        using var tok = Load(name);
        if (tok is null) return;
        int streams = 0;
        foreach (var c in Golden(name)["cases"]!.AsArray())
        {
            int[] ids = Ids(c!);
            var prefixes = c!["prefixes"]!.AsArray().Select(x => x!.GetValue<string>()).ToArray();
            string full = prefixes[^1];
            // Every split: the prompt may end in " " or " n" (held back until "." or "'t" decides), in the middle of a word,
            // or be BOS alone; the text shown after it is the HF full decode minus the HF decode of the prompt.
            // A prompt ending inside a character (its decode ends in U+FFFD) is no text a prompt can be: skipped.
            for (int p = 1; p <= ids.Length; p++)
            {
                if (prefixes[p].Contains('\uFFFD')) continue;
                Assert.Equal(full[Math.Min(prefixes[p].Length, full.Length)..], Stream(tok, ids[..p], ids[p..]));
                streams++;
            }
        }
        output.WriteLine($"{name}: {streams} streams equal HF's full decode");
    }

    [Fact]
    public void WithoutTheFlagTinyStoriesDecodesAsWritten()
    {
        if (RealFixtures.Tokenizer("tinystories-260k", output) is not { } where) return;
        var cases = Golden("tinystories-260k")["cases"]!.AsArray();
        foreach (bool? flag in new bool?[] { false, null })   // null: the key absent, false as in Python transformers
        {
            using var tok = TinyStoriesWithFlag(where, flag);
            Assert.False(tok.CleanUpTokenizationSpaces);
            foreach (var c in cases)
            {
                int[] ids = Ids(c!);
                string raw = c!["raw"]!.GetValue<string>();
                Assert.Equal(raw, tok.Decode(ids));
                Assert.Equal(raw[tok.Decode(ids[..1]).Length..], Stream(tok, ids[..1], ids[1..]));
            }
        }
    }

    [Fact]
    public void AFlagThatIsNotTrueOrFalseNamesTheFileAndField()
    {
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"clean_up_tokenization_spaces": "yes"}""");
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(dir));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("'clean_up_tokenization_spaces' must be true or false", e.Message);
    }
}
