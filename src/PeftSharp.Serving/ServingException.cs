namespace PeftSharp.Serving;

/// <summary>
/// A request failure with the HTTP status it maps to (400 bad input, 404 unknown, 409 drift, 429 busy...) and the
/// OpenAI error fields clients branch on: <c>type</c>, <c>code</c> (e.g. <c>context_length_exceeded</c>,
/// <c>model_not_found</c>) and <c>param</c> (the request field at fault). 429 and 503 carry a Retry-After.
/// The server turns it into an OpenAI error body; <see cref="Hosting.PeftServer.StartAsync(string, Hosting.ServerOptions, Adapters.IAdapterLoader)"/>
/// throws it when a startup adapter of <see cref="Hosting.ServerOptions.Adapters"/> cannot load (404 folder not found,
/// 409 made for another base, 400 unreadable or a bad name), its message naming the adapter.
/// </summary>
public sealed class ServingException : Exception
{
    internal ServingException(int status, string message, string type = "invalid_request_error", string? code = null, string? param = null)
        : base(message)
    {
        Status = status;
        Type = type;
        Code = code;
        Param = param;
    }

    /// <summary>The HTTP status the failure maps to (400, 401, 403, 404, 409, 429, 502, 503).</summary>
    public int Status { get; }
    /// <summary>OpenAI's error <c>type</c>, e.g. <c>invalid_request_error</c>, <c>not_found_error</c>, <c>conflict_error</c>.</summary>
    public string Type { get; }
    /// <summary>OpenAI's error <c>code</c> (e.g. <c>model_not_found</c>, <c>unsupported_parameter</c>); null when none applies.</summary>
    public string? Code { get; }
    /// <summary>The request field at fault (e.g. <c>max_tokens</c>); null when the failure is not about one field.</summary>
    public string? Param { get; }
    /// <summary>Seconds a client should wait before retrying (sent as Retry-After on 429 and 503).</summary>
    public int? RetryAfterSeconds { get; init; }

    internal static ServingException BadRequest(string m, string? param = null, string? code = null) => new(400, m, code: code, param: param);
    internal static ServingException NotFound(string m) => new(404, m, "not_found_error");
    internal static ServingException ModelNotFound(string m) => new(404, m, "invalid_request_error", "model_not_found", "model");
    internal static ServingException Conflict(string m) => new(409, m, "conflict_error");
    internal static ServingException Forbidden(string m) => new(403, m, "permission_error");
    internal static ServingException ContextLengthExceeded(string m, string param) => new(400, m, code: "context_length_exceeded", param: param);
    /// <summary>A field OpenAI defines that this server does not implement: refused, never silently ignored.</summary>
    internal static ServingException Unsupported(string param, string m) => new(400, m, code: "unsupported_parameter", param: param);
    internal static ServingException Busy(int status, string m, string type) => new(status, m, type) { RetryAfterSeconds = 1 };
}
