using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using PeftSharp.Serving.Endpoints;
using PeftSharp.Serving.OpenAi;

namespace PeftSharp.Serving.Hosting;

/// <summary>Every failure becomes an OpenAI-style error body with its status; nothing a client sends crashes the server.</summary>
static class ErrorHandling
{
    public static async Task Middleware(HttpContext http, RequestDelegate next)
    {
        try { await next(http); }
        catch (ServingException e) { await Write(http, e.Status, e.Message, e.Type); }
        catch (BadHttpRequestException e) { await Write(http, e.StatusCode, e.Message, "invalid_request_error"); }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested) { }
        catch (Exception e) { await Write(http, 500, $"internal error: {e.Message}", "server_error"); }
    }

    static Task Write(HttpContext http, int status, string message, string type) =>
        http.Response.HasStarted || http.RequestAborted.IsCancellationRequested ? Task.CompletedTask
            : EndpointIo.Json(http, status, OpenAiResponses.Error(message, type));
}

/// <summary>With --api-key, every /v1 endpoint needs "Authorization: Bearer KEY" (compared in constant time).</summary>
static class ApiKeyCheck
{
    public static Task Middleware(HttpContext http, RequestDelegate next, string? apiKey)
    {
        if (apiKey is null) return next(http);
        string header = http.Request.Headers.Authorization.ToString();
        byte[] given = Encoding.UTF8.GetBytes(header.StartsWith("Bearer ", StringComparison.Ordinal) ? header[7..] : "");
        if (CryptographicOperations.FixedTimeEquals(given, Encoding.UTF8.GetBytes(apiKey))) return next(http);
        throw new ServingException(401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error");
    }
}
