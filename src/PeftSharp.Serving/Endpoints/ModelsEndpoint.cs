using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Serving.Endpoints;

/// <summary>
/// GET /v1/models: the base, then every adapter with its content hash, recorded base fingerprint and rank.
/// GET /v1/models/{id}: one of them (404 model_not_found otherwise), as OpenAI's retrieve-model.
/// </summary>
internal static class ModelsEndpoint
{
    public static Task Handle(HttpContext http, ServerState s)
    {
        var data = new JsonArray(Base(s));
        foreach (var v in s.Adapters.Current()) data.Add(AdaptersEndpoint.Describe(v, s));
        return EndpointIo.Json(http, 200, new JsonObject { ["object"] = "list", ["data"] = data });
    }

    public static Task HandleOne(HttpContext http, ServerState s, string id)
    {
        if (id == s.Adapters.BaseName) return EndpointIo.Json(http, 200, Base(s));
        var v = s.Adapters.Current().FirstOrDefault(a => a.Name == id)
            ?? throw ServingException.ModelNotFound($"model '{id}' not found (served: {string.Join(", ", s.Adapters.Current().Select(a => a.Name).Prepend(s.Adapters.BaseName))})");
        return EndpointIo.Json(http, 200, AdaptersEndpoint.Describe(v, s));
    }

    static JsonObject Base(ServerState s) => new()
    {
        ["id"] = s.Adapters.BaseName, ["object"] = "model", ["created"] = 0, ["owned_by"] = "peftsharp",
        ["base_fingerprint"] = s.Adapters.BaseFingerprint, ["model_type"] = s.Config.ModelType,
        ["quantization"] = s.Scheduler.Model.QuantizationScheme, ["max_model_len"] = s.Config.MaxPositionEmbeddings,
    };
}
