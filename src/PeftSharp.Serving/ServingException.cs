namespace PeftSharp.Serving;

/// <summary>A request failure with the HTTP status it maps to (400 bad input, 404 unknown, 409 drift, 429 busy...).</summary>
public sealed class ServingException(int status, string message, string type = "invalid_request_error") : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;

    public static ServingException BadRequest(string m) => new(400, m);
    public static ServingException NotFound(string m) => new(404, m, "not_found_error");
    public static ServingException Conflict(string m) => new(409, m, "conflict_error");
}
