using System.Text.Json.Nodes;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// Completions logprobs where the tokenizer cleans up tokenization spaces (clean_up_tokenization_spaces true, HF's
/// decode turning " ," into ","): as OpenAI defines them, the tokens joined are the returned text and text_offset[i]
/// is where token i's text starts in it; where the clean-up joins tokens so that no split of the text is theirs, the
/// offsets still point into the text, in order (src/PeftSharp.Serving/README.md says how).
/// </summary>
public class LogprobTextTests(ITestOutputHelper output)
{
    // Byte-level BPE pieces ("Ġ" is a space): words, and punctuation the clean-up pulls onto the word before it.
    static readonly string[] Words = ["x", "y", "ab", "Ġx", "Ġy", "Ġab", "Ġcd", "Ġ,", "Ġ.", "Ġ!", "Ġ?"];
    // Pieces whose clean-up spans tokens: a lone space before "." or ",", " '" + "m", " n" + "'t".
    static readonly string[] Spanning = ["Ġ", ",", ".", "Ġ'", "m", "Ġn", "'t"];

    /// <summary>A random Llama whose vocabulary is <paramref name="vocab"/> (byte-level BPE, no EOS: it runs max_tokens), clean-up on.</summary>
    static string ModelWithVocabulary(string[] vocab, int seed)
    {
        var cfg = RandomModel.LlamaConfig(vocab: vocab.Length);
        cfg["eos_token_id"] = null;
        string dir = RandomModel.Write(cfg, seed);
        var tok = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.TinyLlama, "tokenizer.json")))!.AsObject();
        tok["added_tokens"] = new JsonArray();
        tok["model"]!["vocab"] = new JsonObject(vocab.Select((t, i) => KeyValuePair.Create(t, (JsonNode?)i)));
        tok["model"]!["merges"] = new JsonArray();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tok.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject { ["clean_up_tokenization_spaces"] = true }.ToJsonString());
        return dir;
    }

    static JsonObject Request(bool stream = false) => new()
    {
        ["prompt"] = new JsonArray(0), ["max_tokens"] = 40, ["temperature"] = 1.5, ["seed"] = 7, ["logprobs"] = 2, ["stream"] = stream,
    };

    static (string Text, List<string> Tokens, List<int> Offsets, List<JsonObject> Top) Read(JsonNode logprobs, string text) => (text,
        logprobs["tokens"]!.AsArray().Select(t => t!.GetValue<string>()).ToList(),
        logprobs["text_offset"]!.AsArray().Select(o => o!.GetValue<int>()).ToList(),
        logprobs["top_logprobs"]!.AsArray().Select(o => o!.AsObject()).ToList());

    /// <summary>The completion with its logprobs, non-streamed; and streamed, which must give the same.</summary>
    async Task<(string Text, List<string> Tokens, List<int> Offsets, List<JsonObject> Top)> Complete(ServingHarness h)
    {
        var (status, body) = await h.Post("v1/completions", Request());
        Assert.True(status == 200, body.ToJsonString());
        var choice = body["choices"]![0]!;
        var whole = Read(choice["logprobs"]!, choice["text"]!.GetValue<string>());
        Assert.Equal(40, body["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(40, whole.Tokens.Count);

        var chunks = (await Sse.Read(h.Http, "v1/completions", Request(stream: true))).SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!).ToList();
        Assert.Equal(whole.Text, string.Concat(chunks.Select(c => c["text"]!.GetValue<string>())));
        var parts = chunks.Where(c => c["logprobs"] is not null).Select(c => Read(c["logprobs"]!, "")).ToList();
        Assert.Equal(whole.Tokens, parts.SelectMany(p => p.Tokens));
        Assert.Equal(whole.Offsets, parts.SelectMany(p => p.Offsets));
        // Each chunk carries the logprobs of tokens whose text starts in the text sent so far.
        int sent = 0;
        foreach (var c in chunks)
        {
            sent += c["text"]!.GetValue<string>().Length;
            if (c["logprobs"] is { } lp && c["finish_reason"] is null) Assert.All(Read(lp, "").Offsets, o => Assert.True(o < sent, $"offset {o} past the {sent} characters sent"));
        }
        output.WriteLine($"text: {JsonValue.Create(whole.Text).ToJsonString()}");
        output.WriteLine(string.Join(" ", whole.Tokens.Zip(whole.Offsets, (t, o) => $"{o}:{JsonValue.Create(t).ToJsonString()}")));
        return whole;
    }

    [Fact]
    public async Task TokensJoinToTheCleanedTextAndOffsetsPointAtThem()
    {
        await using var h = await ServingHarness.Start(modelDir: ModelWithVocabulary(Words, seed: 3), servedName: "tiny");
        var (text, tokens, offsets, top) = await Complete(h);

        // The clean-up really changed the text: punctuation came only as " ,"-style tokens, and no space is left before it.
        Assert.True(text.IndexOfAny([',', '.', '!', '?']) >= 0, $"no punctuation generated: '{text}'");
        Assert.DoesNotMatch(" [,.!?]", text);
        Assert.Equal(text, string.Concat(tokens));
        int at = 0;
        for (int i = 0; i < tokens.Count; i++)
        {
            Assert.Equal(at, offsets[i]);
            Assert.StartsWith(tokens[i], text[offsets[i]..]);
            at += tokens[i].Length;
        }
        // The alternatives are decoded the same way (a " ," alternative reads ",").
        Assert.All(top.SelectMany(t => t.Select(kv => kv.Key)), key => Assert.DoesNotMatch("^ [,.!?]", key));

        // echo (without logprobs) returns the prompt as decoded, then the same completion.
        var (status, echoed) = await h.Post("v1/completions", new JsonObject
        {
            ["prompt"] = new JsonArray(0, 7), ["max_tokens"] = 40, ["temperature"] = 1.5, ["seed"] = 7, ["echo"] = true,
        });
        Assert.Equal(200, status);
        var (_, plain) = await h.Post("v1/completions", new JsonObject { ["prompt"] = new JsonArray(0, 7), ["max_tokens"] = 40, ["temperature"] = 1.5, ["seed"] = 7 });
        Assert.Equal("x," + plain["choices"]![0]!["text"]!.GetValue<string>(), echoed["choices"]![0]!["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task WhereCleanUpJoinsTokensOffsetsStillPointIntoTheText()
    {
        await using var h = await ServingHarness.Start(modelDir: ModelWithVocabulary([.. Words, .. Spanning], seed: 5), servedName: "tiny");
        var (text, tokens, offsets, _) = await Complete(h);

        // The case is exercised: no split of the text is the tokens' own texts.
        Assert.NotEqual(text, string.Concat(tokens));
        Assert.Equal(0, offsets[0]);
        int spaceless = 0;
        for (int i = 0; i < tokens.Count; i++)
        {
            Assert.InRange(offsets[i], i == 0 ? 0 : offsets[i - 1], text.Length);
            // Each token's text starts at its offset, or, where the clean-up removed its leading space (" '" + "m"
            // reads "'m"), the rest of it does; the next token starts after it.
            string rest = text[offsets[i]..];
            if (!rest.StartsWith(tokens[i], StringComparison.Ordinal))
            {
                Assert.True(tokens[i].StartsWith(' ') && rest.StartsWith(tokens[i][1..], StringComparison.Ordinal), $"token {i} '{tokens[i]}' at {offsets[i]}: '{rest}'");
                spaceless++;
            }
            else if (i + 1 < tokens.Count) Assert.True(offsets[i + 1] >= offsets[i] + tokens[i].Length, $"token {i + 1} starts inside token {i}");
        }
        Assert.True(spaceless > 0);
    }
}
