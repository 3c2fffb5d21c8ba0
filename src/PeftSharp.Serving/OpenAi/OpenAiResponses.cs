using System.Text.Json.Nodes;

namespace PeftSharp.Serving.OpenAi;

/// <summary>A token as logprobs report it: its text and its own raw bytes (<see cref="Hosting.ServerState.TokenTexts"/>).</summary>
internal readonly record struct TokenText(string Text, byte[] Bytes);

/// <summary>
/// One token's log probability: the token, where its text starts in the returned text, and the top alternatives.
/// <see cref="Logprob"/> is null for an echoed prompt's first token (nothing before it to predict it from).
/// </summary>
internal sealed record TokenLogprob(TokenText Token, float? Logprob, int TextOffset, (TokenText Token, float Logprob)[] Top);

/// <summary>
/// Response bodies in OpenAI's shapes (completions, chat completions, their stream chunks, usage chunks, logprobs,
/// errors), as the OpenAI API reference and the openai-node SDK's types define them.
/// </summary>
internal static class OpenAiResponses
{
    public static JsonObject Error(string message, string type, string? code = null, string? param = null) =>
        new() { ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code } };

    public static JsonObject Usage(int prompt, int completion) =>
        new() { ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion };

    public static JsonObject Completion(string id, long created, string model, string text, string finish, JsonObject usage, JsonObject? logprobs = null) =>
        Completion(id, created, model, [(text, finish, logprobs)], usage);

    /// <summary>A completion of several prompts: one choice per prompt, index = the prompt's.</summary>
    public static JsonObject Completion(string id, long created, string model, IReadOnlyList<(string Text, string Finish, JsonObject? Logprobs)> choices, JsonObject usage) => new()
    {
        ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(choices.Select((c, i) => (JsonNode?)new JsonObject { ["index"] = i, ["text"] = c.Text, ["logprobs"] = c.Logprobs, ["finish_reason"] = c.Finish }).ToArray()),
        ["usage"] = usage,
    };

    public static JsonObject CompletionChunk(string id, long created, string model, string text, string? finish, JsonObject? logprobs = null, int index = 0) => new()
    {
        ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject { ["index"] = index, ["text"] = text, ["logprobs"] = logprobs, ["finish_reason"] = finish }),
    };

    public static JsonObject Chat(string id, long created, string model, string text, string finish, JsonObject usage, JsonObject? logprobs = null) => new()
    {
        ["id"] = id, ["object"] = "chat.completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text }, ["logprobs"] = logprobs, ["finish_reason"] = finish,
        }),
        ["usage"] = usage,
    };

    public static JsonObject ChatChunk(string id, long created, string model, JsonObject delta, string? finish, JsonObject? logprobs = null) => new()
    {
        ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["logprobs"] = logprobs, ["finish_reason"] = finish }),
    };

    /// <summary>stream_options.include_usage: the last chunk before [DONE], with no choices and the request's usage.</summary>
    public static JsonObject UsageChunk(string id, long created, string model, bool chat, JsonObject usage) => new()
    {
        ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(), ["usage"] = usage,
    };

    /// <summary>
    /// Completions' legacy shape: parallel lists of tokens, their log probabilities, the top alternatives (a token →
    /// logprob map holding the top N and the chosen token, so up to N+1 entries) and each token's text offset. An echoed
    /// prompt's first token has null for both (OpenAI's and vLLM's shape).
    /// </summary>
    public static JsonObject CompletionLogprobs(IReadOnlyList<TokenLogprob> entries, int offsetBase) => new()
    {
        ["tokens"] = new JsonArray(entries.Select(e => (JsonNode?)e.Token.Text).ToArray()),
        ["token_logprobs"] = new JsonArray(entries.Select(e => e.Logprob is { } lp ? (JsonNode?)Finite(lp) : null).ToArray()),
        ["top_logprobs"] = new JsonArray(entries.Select(e =>
        {
            if (e.Logprob is not { } chosen) return null;
            var top = new JsonObject();
            foreach (var (t, lp) in e.Top) top[t.Text] ??= Finite(lp);   // distinct ids can decode to the same text: keep the likelier
            top[e.Token.Text] ??= Finite(chosen);
            return (JsonNode?)top;
        }).ToArray()),
        ["text_offset"] = new JsonArray(entries.Select(e => (JsonNode?)(offsetBase + e.TextOffset)).ToArray()),
    };

    /// <summary>Chat's shape: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], refusal: null}.</summary>
    public static JsonObject ChatLogprobs(IReadOnlyList<TokenLogprob> entries) => new()
    {
        ["content"] = new JsonArray(entries.Select(e => (JsonNode?)new JsonObject
        {
            ["token"] = e.Token.Text, ["logprob"] = Finite(e.Logprob ?? float.NaN), ["bytes"] = Bytes(e.Token),
            ["top_logprobs"] = new JsonArray(e.Top.Select(t => (JsonNode?)new JsonObject
            {
                ["token"] = t.Token.Text, ["logprob"] = Finite(t.Logprob), ["bytes"] = Bytes(t.Token),
            }).ToArray()),
        }).ToArray()),
        ["refusal"] = null,
    };

    static JsonArray Bytes(TokenText token) => new(token.Bytes.Select(b => (JsonNode?)(int)b).ToArray());

    // JSON has no -Infinity; OpenAI reports a token of probability ~0 as -9999.0.
    static float Finite(float lp) => float.IsFinite(lp) ? lp : -9999f;
}
