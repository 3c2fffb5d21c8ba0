using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using PeftSharp.Serving.Endpoints;
using PeftSharp.Serving.OpenAi;

namespace PeftSharp.Serving.Hosting;

/// <summary>
/// Every failure becomes an OpenAI-style error body with its status; nothing a client sends crashes the server.
/// Every 5xx is logged with its cause (the client only sees a message; the operator needs the exception).
/// </summary>
static class ErrorHandling
{
    public static async Task Middleware(HttpContext http, RequestDelegate next, ILogger log)
    {
        try { await next(http); }
        catch (ServingException e)
        {
            if (e.Status >= 500) log.LogError("{Method} {Path} -> {Status}: {Message}", http.Request.Method, http.Request.Path, e.Status, e.Message);
            await Write(http, e.Status, OpenAiResponses.Error(e.Message, e.Type, e.Code, e.Param), e.RetryAfterSeconds);
        }
        catch (BadHttpRequestException e) { await Write(http, e.StatusCode, OpenAiResponses.Error(e.Message, "invalid_request_error"), null); }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested) { }
        catch (Exception e)
        {
            log.LogError(e, "{Method} {Path} -> 500: {Message}", http.Request.Method, http.Request.Path, e.Message);
            await Write(http, 500, OpenAiResponses.Error($"internal error: {e.Message}", "server_error"), null);
        }
    }

    static Task Write(HttpContext http, int status, System.Text.Json.Nodes.JsonObject body, int? retryAfter)
    {
        if (http.Response.HasStarted || http.RequestAborted.IsCancellationRequested) return Task.CompletedTask;
        if (retryAfter is { } s) http.Response.Headers.RetryAfter = s.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return EndpointIo.Json(http, status, body);
    }
}

/// <summary>
/// With --api-key, every /v1 endpoint needs "Authorization: Bearer KEY" (compared in constant time). The scheme is
/// case-insensitive (RFC 9110 section 11.1), so "bearer KEY" works as with OpenAI.
/// </summary>
static class ApiKeyCheck
{
    public static Task Middleware(HttpContext http, RequestDelegate next, string? apiKey)
    {
        if (apiKey is null) return next(http);
        string header = http.Request.Headers.Authorization.ToString().Trim();
        string token = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : "";
        if (CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(token), Encoding.UTF8.GetBytes(apiKey))) return next(http);
        // OpenAI's codes: none for a missing key, invalid_api_key for a wrong one.
        throw token.Length == 0 ? new ServingException(401, "missing API key (send Authorization: Bearer KEY)")
            : new ServingException(401, "incorrect API key provided (send Authorization: Bearer KEY)", code: "invalid_api_key");
    }
}
