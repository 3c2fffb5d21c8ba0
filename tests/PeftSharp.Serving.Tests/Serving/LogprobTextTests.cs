using System.Text.Json.Nodes;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// Completions logprobs where the tokenizer cleans up tokenization spaces (clean_up_tokenization_spaces true, HF's
/// decode turning " ," into ","): as OpenAI defines them, the tokens joined are the returned text and text_offset[i]
/// is where token i's text starts in it; where the clean-up spans tokens so that no split of the text is theirs, each
/// token is placed where its text stands without the space the clean-up removed (src/PeftSharp.Serving/README.md).
/// </summary>
public class LogprobTextTests(ITestOutputHelper output)
{
    // Byte-level BPE pieces ("Ġ" is a space): words, and punctuation the clean-up pulls onto the word before it.
    static readonly string[] Words = ["x", "y", "ab", "Ġx", "Ġy", "Ġab", "Ġcd", "Ġ,", "Ġ.", "Ġ!", "Ġ?"];
    // Mostly pieces whose clean-up spans tokens (a lone space before "." or ",", " '" + "m", " n" + "'t"), so that
    // whatever the sampler draws, some of it is that case.
    static readonly string[] Spanning = ["x", "Ġ", ",", ".", "Ġ'", "m", "Ġn", "'t"];

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

    // The highest temperature OpenAI allows: the draws spread over the small vocabulary, whatever the random model prefers.
    static JsonObject Request(int maxTokens, bool stream = false) => new()
    {
        ["prompt"] = new JsonArray(0), ["max_tokens"] = maxTokens, ["temperature"] = 2, ["seed"] = 7, ["logprobs"] = 2, ["stream"] = stream,
    };

    static (string Text, List<string> Tokens, List<int> Offsets, List<JsonObject> Top) Read(JsonNode logprobs, string text) => (text,
        logprobs["tokens"]!.AsArray().Select(t => t!.GetValue<string>()).ToList(),
        logprobs["text_offset"]!.AsArray().Select(o => o!.GetValue<int>()).ToList(),
        logprobs["top_logprobs"]!.AsArray().Select(o => o!.AsObject()).ToList());

    /// <summary>The completion with its logprobs, non-streamed; and streamed, which must give the same.</summary>
    async Task<(string Text, List<string> Tokens, List<int> Offsets, List<JsonObject> Top)> Complete(ServingHarness h, int maxTokens)
    {
        var (status, body) = await h.Post("v1/completions", Request(maxTokens));
        Assert.True(status == 200, body.ToJsonString());
        var choice = body["choices"]![0]!;
        var whole = Read(choice["logprobs"]!, choice["text"]!.GetValue<string>());
        Assert.Equal(maxTokens, body["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(maxTokens, whole.Tokens.Count);

        var chunks = (await Sse.Read(h.Http, "v1/completions", Request(maxTokens, stream: true))).SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!).ToList();
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
        var (text, tokens, offsets, top) = await Complete(h, 40);

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
    public async Task WhereCleanUpSpansTokensEachIsPlacedWhereItsTextStands()
    {
        await using var h = await ServingHarness.Start(modelDir: ModelWithVocabulary(Spanning, seed: 5), servedName: "tiny");
        var (text, tokens, offsets, _) = await Complete(h, 120);

        // The case is exercised: no split of the text is the tokens' own texts.
        Assert.NotEqual(text, string.Concat(tokens));
        // The clean-up only removed spaces, each a token's leading one: each token stands at its offset, whole or
        // without that space (" '" + "m" reads "'m": " '" at the "'"), and the next starts where it ended, so the
        // tokens' texts as they stand make up the whole text.
        int at = 0, spaceless = 0;
        for (int i = 0; i < tokens.Count; i++)
        {
            Assert.Equal(at, offsets[i]);
            string rest = text[at..], token = tokens[i];
            if (!rest.StartsWith(token, StringComparison.Ordinal))
            {
                Assert.True(token.StartsWith(' ') && rest.StartsWith(token[1..], StringComparison.Ordinal), $"token {i} '{token}' at {at}: '{rest}'");
                token = token[1..];
                spaceless++;
            }
            at += token.Length;
        }
        Assert.Equal(text.Length, at);
        output.WriteLine($"{spaceless} tokens whose space the clean-up removed");
        Assert.True(spaceless > 0);
    }
}
