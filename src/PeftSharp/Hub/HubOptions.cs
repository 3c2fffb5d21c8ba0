namespace PeftSharp.Hub;

/// <summary>
/// Where the Hub is and where its cache lives, read from the environment exactly as huggingface_hub's constants.py
/// and utils/_auth.py read it, so a cache and a login are shared with Python users (see Hub/README.md for the variables).
/// </summary>
/// <param name="Endpoint">The Hub's base URL without a trailing slash (HF_ENDPOINT; default <see cref="DefaultEndpoint"/>).</param>
/// <param name="CacheDir">The cache folder holding `models--ORG--NAME` (HF_HUB_CACHE; default ~/.cache/huggingface/hub).</param>
/// <param name="Token">Sent as a bearer token to the Hub's own host (HF_TOKEN or the file `hf auth login` writes); null = anonymous.</param>
/// <param name="Offline">No network: only cached snapshots (HF_HUB_OFFLINE).</param>
public sealed record HubOptions(string Endpoint, string CacheDir, string? Token, bool Offline)
{
    /// <summary>
    /// Why <see cref="Offline"/> is set, as errors say it ("..., and {OfflineCause} it"): the variable that set it, or a
    /// command's own rule (peft plan never downloads).
    /// </summary>
    internal string OfflineCause { get; init; } = "HF_HUB_OFFLINE=1 forbids downloading";

    /// <summary>The public Hub.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>constants.ENV_VARS_TRUE_VALUES.</summary>
    static readonly string[] TrueValues = ["1", "ON", "YES", "TRUE"];

    /// <summary>The settings this process's environment gives (what <see cref="PeftModel.FromPretrained"/> uses when none are passed).</summary>
    public static HubOptions FromEnvironment() => FromEnvironment(Environment.GetEnvironmentVariable);

    internal static HubOptions FromEnvironment(Func<string, string?> env)
    {
        string? Get(string name) => env(name) is { Length: > 0 } v ? v : null;
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string Expand(string p) => p == "~" ? home : p.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(home, p[2..]) : p;

        // HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
        string hfHome = Expand(Get("HF_HOME") ?? Path.Combine(Get("XDG_CACHE_HOME") ?? Path.Combine(home, ".cache"), "huggingface"));
        // HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub.
        string cache = Expand(Get("HF_HUB_CACHE") ?? Get("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(hfHome, "hub"));
        string endpoint = (Get("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/');
        string? offlineVariable = new[] { "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE" }.FirstOrDefault(n => Get(n) is not null);
        bool offline = offlineVariable is not null && TrueValues.Contains(Get(offlineVariable)!.ToUpperInvariant());
        // HF_TOKEN (or the legacy HUGGING_FACE_HUB_TOKEN), else the file `hf auth login` writes: $HF_TOKEN_PATH or $HF_HOME/token.
        string? token = Clean(Get("HF_TOKEN") ?? Get("HUGGING_FACE_HUB_TOKEN"));
        if (token is null)
        {
            string tokenPath = Expand(Get("HF_TOKEN_PATH") ?? Path.Combine(hfHome, "token"));
            if (File.Exists(tokenPath)) token = Clean(File.ReadAllText(tokenPath));
        }
        var options = new HubOptions(endpoint, cache, token, offline);
        return offline ? options with { OfflineCause = $"{offlineVariable}={Get(offlineVariable!)} forbids downloading" } : options;
    }

    /// <summary>_clean_token: newlines removed, spaces trimmed, empty means none.</summary>
    static string? Clean(string? token) =>
        token?.Replace("\r", "").Replace("\n", "").Trim() is { Length: > 0 } t ? t : null;
}
