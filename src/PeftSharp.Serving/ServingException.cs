namespace PeftSharp.Serving;

/// <summary>
/// A request failure with the HTTP status it maps to (400 bad input, 404 unknown, 409 drift, 429 busy...) and the
/// OpenAI error fields clients branch on: <c>type</c>, <c>code</c> (e.g. <c>context_length_exceeded</c>,
/// <c>model_not_found</c>) and <c>param</c> (the request field at fault). 429 and 503 carry a Retry-After.
/// </summary>
public sealed class ServingException(int status, string message, string type = "invalid_request_error", string? code = null, string? param = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Code { get; } = code;
    public string? Param { get; } = param;
    /// <summary>Seconds a client should wait before retrying (sent as Retry-After on 429 and 503).</summary>
    public int? RetryAfterSeconds { get; init; }

    public static ServingException BadRequest(string m, string? param = null, string? code = null) => new(400, m, code: code, param: param);
    public static ServingException NotFound(string m) => new(404, m, "not_found_error");
    public static ServingException ModelNotFound(string m) => new(404, m, "invalid_request_error", "model_not_found", "model");
    public static ServingException Conflict(string m) => new(409, m, "conflict_error");
    public static ServingException Forbidden(string m) => new(403, m, "permission_error");
    public static ServingException ContextLengthExceeded(string m, string param) => new(400, m, code: "context_length_exceeded", param: param);
    /// <summary>A field OpenAI defines that this server does not implement: refused, never silently ignored.</summary>
    public static ServingException Unsupported(string param, string m) => new(400, m, code: "unsupported_parameter", param: param);
    public static ServingException Busy(int status, string m, string type) => new(status, m, type) { RetryAfterSeconds = 1 };
}
