using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Serving.Endpoints;

/// <summary>POST /v1/adapters {name, path} loads or atomically replaces; DELETE /v1/adapters/{name} unloads.</summary>
internal static class AdaptersEndpoint
{
    public static async Task Load(HttpContext http, ServerState s)
    {
        var o = await EndpointIo.ReadJsonObject(http);
        string name = Str(o, "name"), path = Str(o, "path");
        var v = await s.Adapters.LoadRuntimeAsync(name, path);
        await EndpointIo.Json(http, 200, Describe(v, s));
    }

    public static async Task Unload(HttpContext http, ServerState s, string name)
    {
        s.Adapters.Unload(name);
        await EndpointIo.Json(http, 200, new JsonObject { ["id"] = name, ["object"] = "model", ["deleted"] = true });
    }

    public static JsonObject Describe(AdapterVersion v, ServerState s) => new()
    {
        ["id"] = v.Name, ["object"] = "model", ["created"] = 0, ["owned_by"] = "peftsharp", ["parent"] = s.Adapters.BaseName,
        ["version"] = v.Version, ["content_hash"] = v.ContentHash, ["base_fingerprint"] = v.Info.BaseFingerprint,
        ["rank"] = v.Info.Rank, ["adapter_type"] = v.Info.Kind, ["resident"] = !v.Unloaded,
    };

    static string Str(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s
        : throw ServingException.BadRequest($"'{key}' is required and must be a string");
}
