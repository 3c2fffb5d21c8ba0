using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;

namespace PeftSharp.Serving.Endpoints;

/// <summary>Reading request bodies and writing JSON and server-sent events.</summary>
static class EndpointIo
{
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The request body as a JSON object; anything else is a 400 saying why.</summary>
    public static async Task<JsonObject> ReadJsonObject(HttpContext http)
    {
        string body;
        try
        {
            // Strict UTF-8: a lenient reader would turn a bad byte into U+FFFD and serve a prompt nobody sent.
            using var reader = new StreamReader(http.Request.Body, StrictUtf8);
            body = await reader.ReadToEndAsync(http.RequestAborted);
        }
        catch (BadHttpRequestException e) { throw new ServingException(e.StatusCode, $"request body rejected: {e.Message}"); }
        catch (DecoderFallbackException e) { throw ServingException.BadRequest($"the request body is not valid UTF-8 (bad byte at offset {e.Index})"); }
        JsonObject o;
        try { o = JsonNode.Parse(body) as JsonObject ?? throw ServingException.BadRequest("the request body must be a JSON object"); }
        catch (JsonException e) { throw ServingException.BadRequest($"invalid JSON: {e.Message}"); }
        CheckStrings(o);
        return o;
    }

    /// <summary>
    /// JSON may escape a lone UTF-16 surrogate ("\ud800"), which no string can hold as text: System.Text.Json
    /// parses it but throws when the value is read, deep inside a handler (a 500). Every key and string is read here
    /// once, so such a request is a 400 naming the field.
    /// </summary>
    static void CheckStrings(JsonNode? node)
    {
        try
        {
            switch (node)
            {
                case JsonObject o: foreach (var (_, v) in o) CheckStrings(v); break;
                case JsonArray a: foreach (var v in a) CheckStrings(v); break;
                case JsonValue v when v.GetValueKind() == JsonValueKind.String: v.GetValue<string>(); break;
            }
        }
        // Reading a key or string of a parsed tree fails only on invalid text (InvalidOperationException: a lone
        // surrogate) or a duplicate key (ArgumentException).
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            throw ServingException.BadRequest($"invalid JSON at {node!.GetPath()}: {e.Message}");
        }
    }

    public static async Task Json(HttpContext http, int status, JsonNode body)
    {
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        await http.Response.WriteAsync(body.ToJsonString(), http.RequestAborted);
    }

    public static async Task StartEvents(HttpContext http)
    {
        http.Response.StatusCode = 200;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        await http.Response.Body.FlushAsync(http.RequestAborted);
    }

    public static Task Event(HttpContext http, JsonNode data) => Raw(http, data.ToJsonString());
    public static Task Done(HttpContext http) => Raw(http, "[DONE]");

    static async Task Raw(HttpContext http, string data)
    {
        // A vanished client must not fail the request handler: the row is cancelled through RequestAborted.
        if (http.RequestAborted.IsCancellationRequested) return;
        try
        {
            await http.Response.WriteAsync($"data: {data}\n\n", CancellationToken.None);
            await http.Response.Body.FlushAsync(CancellationToken.None);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException) { }
    }
}
