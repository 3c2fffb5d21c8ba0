using System.Net;

namespace PeftSharp.Hub;

/// <summary>
/// A Hub download that cannot go on (repository, revision or file not found, gated or private without an allowed token,
/// the Hub unreachable with nothing cached, a size or hash mismatch); the message is one line naming the repo and the cause.
/// </summary>
/// <param name="message">One line: the repo and the cause.</param>
/// <param name="inner">The HTTP or file error behind it, when there is one.</param>
public sealed class HubException(string message, Exception? inner = null) : IOException(message, inner)
{
    /// <summary>
    /// An error response as huggingface_hub's hf_raise_for_status reads it: X-Error-Code first (RevisionNotFound,
    /// EntryNotFound, GatedRepo, RepoNotFound), then the status (401 means not found or not allowed, as the Hub answers
    /// both alike for private repos).
    /// </summary>
    internal static HubException FromResponse(RepoId repo, HttpResponseMessage response, string endpoint, bool hadToken, string? file = null)
    {
        string? code = Header(response, "X-Error-Code");
        string? message = Header(response, "X-Error-Message");
        int status = (int)response.StatusCode;
        string tokenHint = hadToken ? "the token sent (HF_TOKEN or $HF_HOME/token) is not allowed to read it" : "no token was sent: set HF_TOKEN or log in with `hf auth login`";
        string cause = code switch
        {
            "RevisionNotFound" => $"revision '{repo.Revision}' not found",
            "EntryNotFound" => $"file '{file}' not found at revision '{repo.Revision}'",
            "GatedRepo" => $"gated repo ({status}): accept its conditions on the Hub, then {(hadToken ? "retry with a token of that account" : "set HF_TOKEN")}",
            "RepoNotFound" => $"repository not found on {endpoint} ({status}); if it is private or gated, {tokenHint}",
            _ => status switch
            {
                401 => $"repository not found on {endpoint} or not accessible (401); if it is private or gated, {tokenHint}",
                403 => $"access forbidden (403{(message is null ? "" : $": {message}")}); {tokenHint}",
                404 => file is null ? $"not found on {endpoint} (404)" : $"file '{file}' not found (404)",
                _ => $"{endpoint} answered {status} {response.ReasonPhrase}{(message is null ? "" : $" ({message})")}",
            },
        };
        return new HubException($"{repo}: {cause}");
    }

    internal static bool IsServerError(HttpStatusCode status) => (int)status >= 500 || status == HttpStatusCode.TooManyRequests;

    static string? Header(HttpResponseMessage r, string name) =>
        r.Headers.TryGetValues(name, out var v) ? string.Join(",", v).ReplaceLineEndings(" ") : null;
}
