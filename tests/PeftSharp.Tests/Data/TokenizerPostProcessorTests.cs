using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Tests.Data;

public class TokenizerPostProcessorTests
{
    /// <summary>The fixture tokenizer with a Llama-style template that puts a BOS (here id 258) before every text.</summary>
    static TextTokenizer WithBos()
    {
        string dir = TestPaths.TempDir();
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.TinyLlama, "tokenizer.json")))!.AsObject();
        root["added_tokens"]!.AsArray().Add(JsonNode.Parse("""{"id":258,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}"""));
        root["post_processor"] = JsonNode.Parse("""
            {"type":"Sequence","processors":[{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":true},
             {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
              "pair":[{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[258],"tokens":["<s>"]}}}]}
            """);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), root.ToJsonString());
        return TextTokenizer.Load(dir);
    }

    [Fact]
    public void PostProcessorTokensAreStrippedUnlessRequested()
    {
        var tok = WithBos();
        Assert.Equal([258], tok.Prefix);
        Assert.Empty(tok.Suffix);
        int a = 'a', b = 'b'; // byte-level ids of ASCII letters equal their code points in the fixture
        Assert.Equal([a, b], tok.Encode("ab"));
        Assert.Equal([258, a, b], tok.Encode("ab", addSpecialTokens: true));
        Assert.Equal([a, 259, b], tok.Encode("a<|endoftext|>b")); // special-token text is parsed as the token
    }

    [Fact]
    public void ExamplesStartWithOneBosThatCarriesNoLoss()
    {
        var s = SequenceBuilder.Tokenize(RawExample.PromptCompletion("a", "b", "x"), WithBos(), 259);
        Assert.Equal([258, 'a', 'b', 259], s.Ids);
        Assert.Equal([TokenSequence.Ignore, TokenSequence.Ignore, 'b', 259], s.Labels);
    }
}
