using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Serving.Endpoints;

/// <summary>GET /v1/models: the base, then every adapter with its content hash, recorded base fingerprint and rank.</summary>
public static class ModelsEndpoint
{
    public static Task Handle(HttpContext http, ServerState s)
    {
        var data = new JsonArray(new JsonObject
        {
            ["id"] = s.Adapters.BaseName, ["object"] = "model", ["created"] = 0, ["owned_by"] = "peftsharp",
            ["base_fingerprint"] = s.Adapters.BaseFingerprint, ["model_type"] = s.Config.ModelType,
            ["quantization"] = s.Scheduler.Model.QuantizationScheme, ["max_model_len"] = s.Config.MaxPositionEmbeddings,
        });
        foreach (var v in s.Adapters.Current()) data.Add(AdaptersEndpoint.Describe(v, s));
        return EndpointIo.Json(http, 200, new JsonObject { ["object"] = "list", ["data"] = data });
    }
}
