using System.Text.Json.Nodes;

namespace PeftSharp.Serving.OpenAi;

/// <summary>Response bodies in OpenAI's shapes (completions, chat completions, their stream chunks, errors).</summary>
public static class OpenAiResponses
{
    public static JsonObject Error(string message, string type) =>
        new() { ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = null, ["code"] = null } };

    public static JsonObject Usage(int prompt, int completion) =>
        new() { ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion };

    public static JsonObject Completion(string id, long created, string model, string text, string finish, JsonObject usage) => new()
    {
        ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["text"] = text, ["logprobs"] = null, ["finish_reason"] = finish }),
        ["usage"] = usage,
    };

    public static JsonObject CompletionChunk(string id, long created, string model, string text, string? finish) => new()
    {
        ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["text"] = text, ["logprobs"] = null, ["finish_reason"] = finish }),
    };

    public static JsonObject Chat(string id, long created, string model, string text, string finish, JsonObject usage) => new()
    {
        ["id"] = id, ["object"] = "chat.completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text }, ["finish_reason"] = finish,
        }),
        ["usage"] = usage,
    };

    public static JsonObject ChatChunk(string id, long created, string model, JsonObject delta, string? finish) => new()
    {
        ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["finish_reason"] = finish }),
    };
}
