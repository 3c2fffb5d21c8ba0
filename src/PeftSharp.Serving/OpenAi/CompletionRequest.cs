using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Serving.OpenAi;

/// <summary>
/// The fields of an OpenAI completions / chat completions request that PeftSharp serves, parsed with a precise
/// 400 message for anything malformed. Fields that only inform (user, metadata, store...) and unknown fields are
/// ignored, as OpenAI-compatible servers commonly do; fields that would change the output and are not implemented
/// (tools, response_format, penalties, logit_bias, suffix, best_of) are refused with 400 naming them, never ignored.
/// </summary>
internal sealed record CompletionRequest
{
    public string? Model { get; init; }
    /// <summary>Completions: the prompts, each a text or token ids; several give one choice each (index = the prompt's).</summary>
    public List<PromptInput> Prompts { get; init; } = [];
    /// <summary>Chat: the messages in order.</summary>
    public List<(string Role, string Content)>? Messages { get; init; }
    public int? MaxTokens { get; init; }
    // Sampling fields are null when the request leaves them out: the model's generation_config.json, else OpenAI's defaults, apply.
    public double? Temperature { get; init; }
    public double? TopP { get; init; }
    public int? TopK { get; init; }
    public double? RepetitionPenalty { get; init; }
    public int? Seed { get; init; }
    public string[] Stop { get; init; } = [];
    public bool Stream { get; init; }
    /// <summary>Streaming: end with a chunk holding the usage (stream_options.include_usage).</summary>
    public bool IncludeUsage { get; init; }
    /// <summary>Log probabilities wanted: the number of alternatives per token (0 = the chosen token's only); null = none.</summary>
    public int? TopLogprobs { get; init; }
    /// <summary>Completions: the prompt is sent back before the completion.</summary>
    public bool Echo { get; init; }

    /// <summary>OpenAI's limits: completions' logprobs (top-N) at most 5, chat's top_logprobs at most 20.</summary>
    public const int MaxCompletionLogprobs = 5, MaxChatTopLogprobs = 20;

    public static CompletionRequest Parse(JsonObject o, bool chat)
    {
        int n = OptInt(o, "n") ?? 1;
        if (n != 1) throw ServingException.BadRequest("'n' must be 1 (one choice per request)");
        // Errors name the field the client sent: chat's newer max_completion_tokens wins over max_tokens, as at OpenAI.
        string maxTokensKey = chat && o.ContainsKey("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
        int? topK = OptInt(o, "top_k");
        var r = new CompletionRequest
        {
            Model = OptString(o, "model"),
            MaxTokens = OptInt(o, maxTokensKey),
            Temperature = OptDouble(o, "temperature"),
            TopP = OptDouble(o, "top_p"),
            // vLLM's clients send top_k -1 for "all tokens" (its SamplingParams: "Set to 0 (or -1) to consider all tokens").
            TopK = topK == -1 ? 0 : topK,
            RepetitionPenalty = OptDouble(o, "repetition_penalty"),
            Seed = OptInt(o, "seed"),
            Stop = ParseStop(o["stop"]),
            Stream = OptBool(o, "stream") ?? false,
            TopLogprobs = chat ? ChatLogprobs(o) : OptInt(o, "logprobs"),
            Echo = !chat && (OptBool(o, "echo") ?? false),
        };
        if (o["stream_options"] is { } so)
        {
            if (!r.Stream) throw ServingException.BadRequest("'stream_options' is only allowed when 'stream' is true", "stream_options");
            if (so is not JsonObject soo) throw ServingException.BadRequest("'stream_options' must be an object", "stream_options");
            r = r with { IncludeUsage = OptBool(soo, "include_usage") ?? false };
        }
        if (!chat && r.TopLogprobs is < 0 or > MaxCompletionLogprobs)
            throw ServingException.BadRequest($"'logprobs' must be in [0, {MaxCompletionLogprobs}] (got {r.TopLogprobs})", "logprobs");
        RefuseUnimplemented(o, chat);
        // max_tokens 0 with echo scores the prompt alone (OpenAI's legacy completions and vLLM allow it).
        if (r.MaxTokens is < 0 || r.MaxTokens == 0 && !r.Echo)
            throw ServingException.BadRequest($"'{maxTokensKey}' must be >= 1 (got {r.MaxTokens}){(chat ? "" : "; 0 only with 'echo', to score the prompt")}", maxTokensKey);
        if (r.Temperature is < 0 or > 2) throw ServingException.BadRequest($"'temperature' must be in [0, 2] (got {r.Temperature})");
        if (r.TopP is { } p && !(p > 0 && p <= 1)) throw ServingException.BadRequest($"'top_p' must be in (0, 1] (got {r.TopP})");
        if (r.TopK is < 0) throw ServingException.BadRequest($"'top_k' must be >= 0 (0 or -1 = off; got {r.TopK})");
        if (r.RepetitionPenalty is { } rp && !(rp > 0 && rp <= 100)) throw ServingException.BadRequest($"'repetition_penalty' must be in (0, 100] (got {r.RepetitionPenalty})");
        if (chat) return r with { Messages = ParseMessages(o["messages"]) };
        r = r with { Prompts = ParsePrompts(o["prompt"]) };
        return r;
    }

    /// <summary>Chat: logprobs (bool) and top_logprobs (0-20, only with logprobs true), as OpenAI validates them.</summary>
    static int? ChatLogprobs(JsonObject o)
    {
        bool on = OptBool(o, "logprobs") ?? false;
        int? top = OptInt(o, "top_logprobs");
        if (top is not null && !on) throw ServingException.BadRequest("'top_logprobs' needs 'logprobs' set to true", "top_logprobs");
        if (top is < 0 or > MaxChatTopLogprobs) throw ServingException.BadRequest($"'top_logprobs' must be in [0, {MaxChatTopLogprobs}] (got {top})", "top_logprobs");
        return on ? top ?? 0 : null;
    }

    /// <summary>OpenAI fields that change the output and that this server does not implement: a 400 naming the field.</summary>
    static void RefuseUnimplemented(JsonObject o, bool chat)
    {
        static bool Empty(JsonNode? n) => n is null || n is JsonArray { Count: 0 } || n is JsonObject { Count: 0 };
        static bool IsString(JsonNode? n, string value) => n is JsonValue v && v.TryGetValue<string>(out var s) && s == value;
        static bool IsZero(JsonNode? n) => n is null || n is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.GetValue<double>() == 0;
        if (!Empty(o["tools"]) || !Empty(o["functions"]))
            throw ServingException.Unsupported(o["tools"] is null ? "functions" : "tools", "tool and function calling is not supported by this server; send the request without 'tools'/'functions'");
        if (o["tool_choice"] is { } tc && !IsString(tc, "none") && !IsString(tc, "auto"))
            throw ServingException.Unsupported("tool_choice", "'tool_choice' is not supported (no tools); only \"none\" or \"auto\" is accepted");
        if (o["function_call"] is { } fc && !IsString(fc, "none") && !IsString(fc, "auto"))
            throw ServingException.Unsupported("function_call", "'function_call' is not supported (no functions)");
        if (o["response_format"] is { } rf && !(rf is JsonObject rfo && IsString(rfo["type"], "text")))
            throw ServingException.Unsupported("response_format", "'response_format' other than {\"type\": \"text\"} is not supported (no constrained JSON output)");
        if (!Empty(o["logit_bias"])) throw ServingException.Unsupported("logit_bias", "'logit_bias' is not supported");
        foreach (var key in new[] { "presence_penalty", "frequency_penalty" })
            if (!IsZero(o[key])) throw ServingException.Unsupported(key, $"'{key}' other than 0 is not supported");
        if (!chat && o["suffix"] is { } sfx && !IsString(sfx, "")) throw ServingException.Unsupported("suffix", "'suffix' (insertion) is not supported");
        if (!chat && o["best_of"] is { } bo && !(bo is JsonValue bv && bv.GetValueKind() == JsonValueKind.Number && bv.GetValue<double>() == 1))
            throw ServingException.Unsupported("best_of", "'best_of' must be 1 (one candidate per request)");
    }

    /// <summary>The most prompts one request may carry (each is a choice, run as its own row).</summary>
    public const int MaxPrompts = 64;

    /// <summary>
    /// OpenAI's four prompt shapes: a string, an array of strings, an array of token ids, an array of such arrays
    /// (lm-evaluation-harness sends [[ids]]). Several prompts are several choices.
    /// </summary>
    static List<PromptInput> ParsePrompts(JsonNode? p)
    {
        static bool IsString(JsonNode? x) => x is JsonValue v && v.TryGetValue<string>(out _);
        static bool IsIds(JsonNode? x) => x is JsonArray { Count: > 0 } a && a.All(t => t is JsonValue tv && tv.GetValueKind() == JsonValueKind.Number && tv.TryGetValue<int>(out _));
        static PromptInput One(JsonNode x) => IsString(x) ? new PromptInput(x.GetValue<string>(), null) : new PromptInput(null, x.AsArray().Select(t => t!.GetValue<int>()).ToArray());
        List<PromptInput> prompts = p switch
        {
            null => throw ServingException.BadRequest("'prompt' is required"),
            _ when IsString(p) || IsIds(p) => [One(p)],
            JsonArray { Count: > 0 } a when a.All(IsString) || a.All(IsIds) => a.Select(x => One(x!)).ToList(),
            _ => throw ServingException.BadRequest("'prompt' must be a string, an array of strings, an array of token ids or an array of token-id arrays"),
        };
        if (prompts.Count > MaxPrompts) throw ServingException.BadRequest($"'prompt' holds {prompts.Count} prompts; at most {MaxPrompts} per request", "prompt");
        return prompts;
    }

    static List<(string, string)> ParseMessages(JsonNode? node)
    {
        if (node is not JsonArray { Count: > 0 } a) throw ServingException.BadRequest("'messages' must be a non-empty array");
        var list = new List<(string, string)>();
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i] is not JsonObject m) throw ServingException.BadRequest($"messages[{i}] must be an object");
            string role = OptString(m, "role") ?? throw ServingException.BadRequest($"messages[{i}].role is required");
            if (role is not ("system" or "user" or "assistant" or "developer" or "tool"))
                throw ServingException.BadRequest($"messages[{i}].role '{role}' is not system, developer, user, assistant or tool");
            // An assistant turn that called tools has content null (OpenAI's history shape): accepted, rendered as an
            // empty turn, since the chat format has no syntax for tool calls.
            bool toolTurn = role == "assistant" && (m["tool_calls"] is JsonArray { Count: > 0 } || m["function_call"] is JsonObject);
            list.Add((role, toolTurn && m["content"] is null ? "" : ContentText(m["content"], i)));
        }
        return list;
    }

    /// <summary>Content is a string or an array of {type:"text", text} parts (joined).</summary>
    static string ContentText(JsonNode? c, int i) => c switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonArray parts => string.Concat(parts.Select((p, j) => p is JsonObject po && OptString(po, "type") == "text" && OptString(po, "text") is { } t ? t
            : throw ServingException.BadRequest($"messages[{i}].content[{j}] must be a text part"))),
        _ => throw ServingException.BadRequest($"messages[{i}].content must be a string or an array of text parts"),
    };

    static string[] ParseStop(JsonNode? s)
    {
        string[] stops = s switch
        {
            null => [],
            JsonValue v when v.TryGetValue<string>(out var one) => [one],
            JsonArray a when a.Count <= 4 && a.All(x => x is JsonValue xv && xv.TryGetValue<string>(out _)) => a.Select(x => x!.GetValue<string>()).ToArray(),
            _ => throw ServingException.BadRequest("'stop' must be a string or an array of at most 4 strings"),
        };
        if (stops.Any(string.IsNullOrEmpty)) throw ServingException.BadRequest("'stop' strings must not be empty");
        return stops;
    }

    static string? OptString(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        _ => throw ServingException.BadRequest($"'{key}' must be a string"),
    };

    static int? OptInt(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out var i) => i,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue => (int)d,
        // A whole number past 32 bits is an integer: say what is wrong with it.
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var d) && d == Math.Floor(d) =>
            throw ServingException.BadRequest($"'{key}' is out of range (got {v.ToJsonString()}; the limit is {int.MaxValue} in magnitude)", key),
        _ => throw ServingException.BadRequest($"'{key}' must be an integer"),
    };

    static double? OptDouble(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var d) => d,
        _ => throw ServingException.BadRequest($"'{key}' must be a number"),
    };

    static bool? OptBool(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        _ => throw ServingException.BadRequest($"'{key}' must be true or false"),
    };
}

/// <summary>One completions prompt: its text, or its token ids.</summary>
internal sealed record PromptInput(string? Text, int[]? Ids);
