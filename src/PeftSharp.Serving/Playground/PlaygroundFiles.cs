using System.Reflection;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace PeftSharp.Serving.Playground;

/// <summary>
/// The web playground at "/": three static files embedded in this assembly (Playground/wwwroot, EmbeddedResource), so
/// the page works offline with no CDN and no files beside the binary. Served before the API-key check: the page itself
/// is public and asks for the key, which it sends as "Authorization: Bearer" to the /v1 endpoints it calls.
/// Every response carries a strong ETag and "Cache-Control: no-cache" (the browser revalidates and gets a 304 until
/// the server is upgraded, so a new page never meets a stale script), nosniff, and a CSP allowing only this origin.
/// </summary>
internal static class PlaygroundFiles
{
    sealed record Asset(byte[] Bytes, string ContentType, string ETag);

    static readonly Dictionary<string, Asset> Assets = new()
    {
        ["/"] = Load("index.html", "text/html; charset=utf-8"),
        ["/playground/app.js"] = Load("app.js", "text/javascript; charset=utf-8"),
        ["/playground/style.css"] = Load("style.css", "text/css; charset=utf-8"),
    };

    /// <summary>Model output is put on the page as text only; the policy stops anything else from running even so.</summary>
    const string ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

    /// <summary>Adds the playground's routes ahead of the API-key check (call before it).</summary>
    public static void UsePlayground(this WebApplication app) => app.Use(Middleware);

    static Task Middleware(HttpContext http, RequestDelegate next)
    {
        if (!(HttpMethods.IsGet(http.Request.Method) || HttpMethods.IsHead(http.Request.Method))
            || !Assets.TryGetValue(http.Request.Path.Value ?? "", out var asset)) return next(http);
        var h = http.Response.Headers;
        h.ETag = asset.ETag;
        h.CacheControl = "no-cache";
        h.XContentTypeOptions = "nosniff";
        h.ContentSecurityPolicy = ContentSecurityPolicy;
        if (http.Request.Headers.IfNoneMatch.Contains(asset.ETag))
        {
            http.Response.StatusCode = StatusCodes.Status304NotModified;
            return Task.CompletedTask;
        }
        http.Response.ContentType = asset.ContentType;
        http.Response.ContentLength = asset.Bytes.Length;
        return HttpMethods.IsHead(http.Request.Method) ? Task.CompletedTask : http.Response.Body.WriteAsync(asset.Bytes, http.RequestAborted).AsTask();
    }

    static Asset Load(string file, string contentType)
    {
        string resource = $"PeftSharp.Serving.Playground.{file}";
        using var stream = typeof(PlaygroundFiles).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"embedded resource '{resource}' missing from {typeof(PlaygroundFiles).Assembly.GetName().Name} (see PeftSharp.Serving.csproj)");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        byte[] bytes = copy.ToArray();
        return new Asset(bytes, contentType, $"\"{Convert.ToHexStringLower(SHA256.HashData(bytes))[..16]}\"");
    }
}
