using System.Text.Json.Nodes;
using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Models;

/// <summary>
/// tokenizer.json's declared added-token ids against the ids HF's tokenizers library gives them. A real tokenizer's
/// added ids follow its vocabulary, and loading says nothing; a file with a gap (an added token declared past the next
/// free id) is renumbered by the library, as transformers warns, and loading says so instead of the special-token map
/// and the encoder disagreeing silently.
/// </summary>
public class AddedTokenIdTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(TextStreamerFidelityTests.Families), MemberType = typeof(TextStreamerFidelityTests))]
    public void RealTokenizersLoadWithoutARenumberingWarning(string name)
    {
        if (RealFixtures.Tokenizer(name, output) is not { } where) return;
        using var warnings = new CapturedWarnings();
        using var tok = RealFixtures.Load(where);
        Assert.DoesNotContain(warnings.Messages, m => m.Contains("is declared with id"));
        foreach (var (content, id) in tok.SpecialTokens) Assert.Contains(id, tok.Encode(content));
    }

    [Fact]
    public void AnAddedTokenPastAGapIsRenumberedAndSaidSo()
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.TinyLlama, "tokenizer.json")))!.AsObject();
        // The fixture's vocabulary ends at 258 and <|endoftext|> is 259; a second special token declared at 300.
        root["added_tokens"]!.AsArray().Add(new JsonObject
        {
            ["id"] = 300, ["content"] = "<|end|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        });
        string path = Path.Combine(TestPaths.TempDir(), "tokenizer.json");
        File.WriteAllText(path, root.ToJsonString());
        using var warnings = new CapturedWarnings();
        using var tok = new TextTokenizer(path);
        Assert.Equal([260], tok.Encode("<|end|>"));   // what HF's library gives it, whatever the file declares
        Assert.Contains(warnings.Messages, m => m == $"{path}: added token '<|end|>' is declared with id 300, but the tokenizer gives it id 260 (HF's tokenizers number added tokens after the vocabulary, as transformers warns); ids of this token disagree between encoding and the declared id");
    }
}
