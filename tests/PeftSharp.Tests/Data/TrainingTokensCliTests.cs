using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Data;

/// <summary>
/// `peft tokenize --data`: the sequences `train` learns from, through the same loader. A prompt/completion example is
/// encoded whole, as TRL's SFTTrainer encodes prompt + completion: the ids are HF's tokenizer(prompt + completion) and
/// EOS, the loss on the completion's tokens and EOS. Encoded apart, a SentencePiece (Llama) tokenizer gave the
/// completion a leading "▁" of its own (" Paris" after "A:" was trained as "▁", "▁Paris", so the adapter learned
/// to answer with a double space) and read "world" after "Hello" as " world".
/// </summary>
[Collection("console")]
public class TrainingTokensCliTests(ITestOutputHelper output)
{
    static int[] Ints(JsonNode? a) => a!.AsArray().Select(x => x!.GetValue<int>()).ToArray();

    static int[] TokenizeText(string model, string text)
    {
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", model, "--text", text, "--json");
        Assert.True(code == 0, err);
        return Ints(JsonNode.Parse(stdout)!["ids"]);
    }

    [Fact]
    public void A_prompt_completion_example_is_the_whole_text_encoded_once_with_the_completion_learned()
    {
        if (RealFixtures.Folder("tinystories-260k") is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real/tinystories-260k is absent"); return; }
        string model = Path.Combine(real, "hf"), data = Path.Combine(TestPaths.TempDir(), "pc.jsonl");
        var pairs = new[] { ("Q: Who is Lily?\nA:", " Lily is a girl."), ("Once upon a", " time"), ("Hello", "world") };
        File.WriteAllLines(data, pairs.Select(p => new JsonObject { ["prompt"] = p.Item1, ["completion"] = p.Item2 }.ToJsonString()));
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", model, "--data", data, "--json");
        Assert.True(code == 0, err);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(pairs.Length, lines.Count);
        const int Eos = 2;   // stories260K's </s>
        for (int i = 0; i < pairs.Length; i++)
        {
            var (prompt, completion) = pairs[i];
            int[] whole = TokenizeText(model, prompt + completion), promptIds = TokenizeText(model, prompt);
            int[] ids = Ints(lines[i]["ids"]), labels = Ints(lines[i]["labels"]);
            Assert.Equal([.. whole, Eos], ids);   // BOS once (the tokenizer's), the text as HF encodes it, EOS once
            // The loss starts where the prompt's own ids stop agreeing with the whole: after the prompt, or at the
            // token "Hello" + "world" merge across the boundary ("o" + "w" -> "ow").
            int shared = promptIds.Zip(whole).TakeWhile(p => p.First == p.Second).Count();
            Assert.Equal(i < 2 ? promptIds.Length : promptIds.Length - 1, shared);
            Assert.Equal([.. Enumerable.Repeat(-100, shared), .. ids[shared..]], labels);
        }
    }

    [Fact]
    public void Plain_output_marks_the_learned_tokens_and_bad_flags_are_named()
    {
        string data = Path.Combine(TestPaths.TempDir(), "pc.jsonl");
        File.WriteAllText(data, new JsonObject { ["prompt"] = "ab", ["completion"] = "cd" }.ToJsonString() + "\n");
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", TestPaths.TinyLlama, "--data", data);
        Assert.True(code == 0, err);
        Assert.Contains("sequence 1 (5 tokens, 3 with loss):", stdout);
        Assert.Contains("tokens: \"a\" \"b\" [[\"c\"]] [[\"d\"]] [[", stdout);
        Assert.Contains("1 examples -> 1 sequences", err);

        (code, _, err) = CliCapture.Run("tokenize", "--model", TestPaths.TinyLlama, "--text", "ab", "--packing");
        Assert.Equal(1, code);
        Assert.Contains("--max-seq and --packing need --data", err);
    }
}
