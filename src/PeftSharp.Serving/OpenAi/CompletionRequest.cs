using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Serving.OpenAi;

/// <summary>
/// The fields of an OpenAI completions / chat completions request that PeftSharp serves, parsed with a precise
/// 400 message for anything malformed. Unknown fields are ignored, as OpenAI-compatible servers commonly do.
/// </summary>
public sealed record CompletionRequest
{
    public string? Model { get; init; }
    /// <summary>Completions: the prompt text (or ids in <see cref="PromptIds"/>).</summary>
    public string? Prompt { get; init; }
    public int[]? PromptIds { get; init; }
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

    public static CompletionRequest Parse(JsonObject o, bool chat)
    {
        int n = OptInt(o, "n") ?? 1;
        if (n != 1) throw ServingException.BadRequest("'n' must be 1 (one choice per request)");
        var r = new CompletionRequest
        {
            Model = OptString(o, "model"),
            MaxTokens = OptInt(o, chat && o.ContainsKey("max_completion_tokens") ? "max_completion_tokens" : "max_tokens"),
            Temperature = OptDouble(o, "temperature"),
            TopP = OptDouble(o, "top_p"),
            TopK = OptInt(o, "top_k"),
            RepetitionPenalty = OptDouble(o, "repetition_penalty"),
            Seed = OptInt(o, "seed"),
            Stop = ParseStop(o["stop"]),
            Stream = OptBool(o, "stream") ?? false,
        };
        if (r.MaxTokens is < 1) throw ServingException.BadRequest($"'max_tokens' must be >= 1 (got {r.MaxTokens})");
        if (r.Temperature is < 0 or > 2) throw ServingException.BadRequest($"'temperature' must be in [0, 2] (got {r.Temperature})");
        if (r.TopP is { } p && !(p > 0 && p <= 1)) throw ServingException.BadRequest($"'top_p' must be in (0, 1] (got {r.TopP})");
        if (r.TopK is < 0) throw ServingException.BadRequest($"'top_k' must be >= 0 (0 = off; got {r.TopK})");
        if (r.RepetitionPenalty is { } rp && !(rp > 0 && rp <= 100)) throw ServingException.BadRequest($"'repetition_penalty' must be in (0, 100] (got {r.RepetitionPenalty})");
        return chat ? r with { Messages = ParseMessages(o["messages"]) } : ParsePrompt(r, o["prompt"]);
    }

    static CompletionRequest ParsePrompt(CompletionRequest r, JsonNode? p)
    {
        switch (p)
        {
            case JsonValue v when v.TryGetValue<string>(out var s): return r with { Prompt = s };
            case JsonArray { Count: 1 } a when a[0] is JsonValue v1 && v1.TryGetValue<string>(out var s1): return r with { Prompt = s1 };
            case JsonArray { Count: > 0 } a when a.All(x => x is JsonValue xv && xv.TryGetValue<int>(out _)):
                return r with { PromptIds = a.Select(x => x!.GetValue<int>()).ToArray() };
            case null: throw ServingException.BadRequest("'prompt' is required");
            default: throw ServingException.BadRequest("'prompt' must be a string, an array of one string or an array of token ids");
        }
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
            list.Add((role, ContentText(m["content"], i)));
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
