using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// Chat logprobs' <c>bytes</c> as OpenAI defines them ("the UTF-8 bytes representation of the token", to be joined
/// where a character is split over tokens): each token's own raw bytes, on real tokenizers (TinyLlama's SentencePiece
/// with byte fallback, SmolLM's byte-level BPE) through /v1/chat/completions. The model is built to answer a chosen
/// text: its tokens joined must give the content's UTF-8, with the tokens that split a character one byte or piece each.
/// </summary>
public class LogprobBytesTests(ITestOutputHelper output)
{
    // Accented, emoji and CJK characters; no token repeats in either tokenizer (the chain model needs that). Byte 0xC4
    // is in none of them, so its single-byte token is a safe alternative.
    const string Answer = "Café😀中文";

    /// <summary>
    /// A one-layer Llama over the tokenizer's vocabulary whose greedy answer is <paramref name="chain"/> then EOS:
    /// attention and MLP add nothing (o_proj, down_proj zero), so the logits depend on the last token alone; chain token
    /// i is the one-hot e_i and lm_head scores its successor on dim i (any other token, the prompt's last, leads to the
    /// first). Every step's runner-up is <paramref name="alternative"/>, at half the successor's score.
    /// </summary>
    static string ChainModel((string Folder, string File) t, int[] chain, int eos, int alternative, int vocab)
    {
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(t.Folder, t.File), Path.Combine(dir, "tokenizer.json"));
        File.Copy(Path.Combine(t.Folder, "tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
        const int hidden = 32, start = hidden - 1;
        Assert.True(chain.Length < start, "answer too long for the chain model");
        var cfg = RandomModel.LlamaConfig(hidden: hidden, layers: 1, vocab: vocab);
        cfg["eos_token_id"] = eos;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());

        var embed = new float[vocab * hidden];
        var head = new float[vocab * hidden];
        for (int id = 0; id < vocab; id++) embed[id * hidden + start] = 1;
        for (int i = 0; i < chain.Length; i++)
        {
            embed[chain[i] * hidden + start] = 0;
            embed[chain[i] * hidden + i] = 1;
        }
        for (int dim = 0; dim < chain.Length; dim++) head[(dim + 1 < chain.Length ? chain[dim + 1] : eos) * hidden + dim] = 10;
        head[chain[0] * hidden + start] = 10;
        for (int dim = 0; dim < hidden; dim++) head[alternative * hidden + dim] = 5;

        var weights = RandomModel.Weights(cfg, seed: 1);
        foreach (var name in weights.Keys.ToList())
        {
            if (name.EndsWith("o_proj.weight") || name.EndsWith("down_proj.weight")) weights[name] = zeros_like(weights[name]);
            if (name.EndsWith("norm.weight")) weights[name] = ones_like(weights[name]);
        }
        weights["model.embed_tokens.weight"] = tensor(embed, new long[] { vocab, hidden });
        weights["lm_head.weight"] = tensor(head, new long[] { vocab, hidden });
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), weights.Select(kv => (kv.Key, kv.Value)).ToList());
        return dir;
    }

    static byte[] Bytes(JsonNode entry) => entry["bytes"]!.AsArray().Select(b => (byte)b!.GetValue<int>()).ToArray();

    [Theory]
    [InlineData("tinyllama-chat", "<0xC4>")]   // SentencePiece byte fallback: the piece of byte 0xC4
    [InlineData("smollm-135m", "Ä")]           // byte-level BPE: GPT-2's bytes_to_unicode writes byte 0xC4 as U+00C4
    public async Task EachTokensBytesAreItsOwnAndJoinToTheContent(string tokenizer, string byteC4Piece)
    {
        if (RealFixtures.Tokenizer(tokenizer, output) is not { } t) return;
        var root = JsonFile.ReadObject(Path.Combine(t.Folder, t.File));
        int alternative = root["model"]!["vocab"]![byteC4Piece]!.GetValue<int>();
        string eosText = JsonFile.ReadObject(Path.Combine(t.Folder, "tokenizer_config.json"))["eos_token"]!.GetValue<string>();
        int[] chain;
        int eos, vocab;
        using (var tok = RealFixtures.Load(t))
        {
            chain = tok.Encode(Answer);
            eos = tok.SpecialTokens[eosText];
            vocab = tok.VocabSize;
        }
        Assert.True(chain.Distinct().Count() == chain.Length, $"'{Answer}' repeats a token: [{string.Join(",", chain)}]");
        await using var h = await ServingHarness.Start(modelDir: ChainModel(t, chain, eos, alternative, vocab), servedName: "chain");

        var req = new JsonObject
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
            ["max_tokens"] = chain.Length + 4, ["temperature"] = 0, ["logprobs"] = true, ["top_logprobs"] = 2,
        };
        var (status, body) = await h.Post("v1/chat/completions", (JsonObject)req.DeepClone());
        Assert.True(status == 200, body.ToJsonString());
        string content = body["choices"]![0]!["message"]!["content"]!.GetValue<string>();
        var entries = body["choices"]![0]!["logprobs"]!["content"]!.AsArray().Select(e => e!).ToList();
        output.WriteLine($"content {JsonValue.Create(content).ToJsonString()}");
        foreach (var e in entries) output.WriteLine($"{e["token"]!.ToJsonString()} [{string.Join(" ", Bytes(e).Select(b => b.ToString("X2")))}]");

        // The model answered the chain (the content may keep the first token's space after the prompt), then EOS.
        Assert.Equal(Answer, content.TrimStart(' '));
        Assert.Equal(chain.Length, entries.Count);
        // The tokens' bytes joined are the content's UTF-8: a token completing a character carries only its own bytes.
        Assert.Equal(Encoding.UTF8.GetBytes(content), entries.SelectMany(Bytes).ToArray());
        // The case is exercised: some tokens are parts of a character (their bytes alone are not UTF-8).
        Assert.Contains(entries, e => !System.Text.Unicode.Utf8.IsValid(Bytes(e)));
        // Each step's runner-up is the single-byte token: its bytes are that byte (its text alone cannot show it).
        Assert.All(entries, e =>
        {
            var top = e["top_logprobs"]!.AsArray();
            Assert.Equal(Bytes(e), Bytes(top[0]!));
            Assert.Equal([0xC4], Bytes(top[1]!));
        });

        // Streamed: the same tokens and bytes.
        req["stream"] = true;
        var streamed = (await Sse.Read(h.Http, "v1/chat/completions", req)).SkipLast(1)
            .SelectMany(e => JsonNode.Parse(e)!["choices"]![0]!["logprobs"]?["content"]?.AsArray() ?? []).Select(e => e!).ToList();
        Assert.Equal(entries.Select(Bytes), streamed.Select(Bytes));
        Assert.Equal(entries.Select(e => e["token"]!.GetValue<string>()), streamed.Select(e => e["token"]!.GetValue<string>()));
    }
}
