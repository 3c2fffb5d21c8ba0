using Microsoft.Extensions.Logging;

namespace PeftSharp.Serving.Hosting;

/// <summary>Everything `peft serve` can be told (each maps to one flag, named in <see cref="Validate"/>'s messages).</summary>
public sealed record ServerOptions
{
    /// <summary>The IP address to listen on, or "localhost" (default 127.0.0.1: this machine only).</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>The TCP port (default 8000); 0 picks a free port, which <see cref="PeftServer.BaseAddress"/> tells.</summary>
    public int Port { get; init; } = 8000;
    /// <summary>When set, every /v1 endpoint needs "Authorization: Bearer KEY".</summary>
    public string? ApiKey { get; init; }
    /// <summary>Runtime loading (POST /v1/adapters) only from under this folder; null turns it off.</summary>
    public string? AdapterRoot { get; init; }
    /// <summary>Startup adapters: name (the model id clients send) → PEFT adapter folder. Loaded before the server listens.</summary>
    public IReadOnlyList<(string Name, string Folder)> Adapters { get; init; } = [];
    /// <summary>Adapters resident on the model at once (default 64); beyond it the least recently used idle one is
    /// unloaded and reloads on demand.</summary>
    public int MaxAdapters { get; init; } = 64;
    /// <summary>Rows decoded together; 1 serves one request at a time (the sequential baseline).</summary>
    public int MaxBatch { get; init; } = 32;
    /// <summary>
    /// Most waiting requests prefilled together in one forward (1: each alone, as before batched prefill); null: 8 (or
    /// MaxBatch when smaller). Measured (`serve-load`, 32 clients): by 8 gave 1.38x the tokens/s of prefilling alone with
    /// time to first token 0.66x (p50) and 0.51x (p99); all 32 at once gave 1.28x tokens/s but 1.8x the p50 wait.
    /// </summary>
    public int? MaxPrefillBatch { get; init; }
    /// <summary>Most tokens one batched prefill forward holds (rows x the longest prompt, left padding included; default
    /// <see cref="PeftSharp.Memory.ServeRequest.DefaultMaxPrefillTokens"/>, the figure `peft plan --serve` counts); a single
    /// longer prompt is prefilled alone. It bounds prefill's activations and the cache it joins to the batch.</summary>
    public int MaxPrefillTokens { get; init; } = PeftSharp.Memory.ServeRequest.DefaultMaxPrefillTokens;
    /// <summary>Requests waiting for a batch slot before new ones get 429.</summary>
    public int MaxQueue { get; init; } = 256;
    /// <summary>The model id clients use for the base (default: the model folder's name).</summary>
    public string? ServedName { get; init; }
    /// <summary>On shutdown, how long running requests may finish before they are cancelled.</summary>
    public TimeSpan ShutdownGrace { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Largest request body in bytes (default 4 MiB); larger ones get 413.</summary>
    public long MaxBodyBytes { get; init; } = 4 << 20;
    /// <summary>Least severe level logged (--log-level). Server errors (5xx) and refused adapter loads are logged with their cause.</summary>
    public LogLevel LogLevel { get; init; } = LogLevel.Information;
    /// <summary>Where logs go; null: the console (standard error, so standard output stays the program's).</summary>
    public IReadOnlyList<ILoggerProvider>? LoggerProviders { get; init; }
    /// <summary>How /v1/chat/completions renders messages. Null (the default): the model folder's own chat template
    /// (chat_template.jinja / tokenizer_config.json), or PeftSharp's simple format with a note when the folder has
    /// none. Set it to serve with another template (`peft serve --chat-template`).</summary>
    public PeftSharp.Chat.ChatPrompter? Chat { get; init; }

    /// <summary>Checks the options; <c>StartAsync</c> calls it.</summary>
    /// <exception cref="ArgumentException">A value out of range, a host that is no IP address, a missing adapter root
    /// or an empty key; the message names the `peft serve` flag (<c>--port</c>, <c>--max-batch</c>, ...).</exception>
    public void Validate()
    {
        if (Port is < 0 or > 65535) throw new ArgumentException($"--port must be 0-65535 (got {Port})");
        if (MaxBatch < 1) throw new ArgumentException($"--max-batch must be >= 1 (got {MaxBatch})");
        if (MaxPrefillBatch < 1) throw new ArgumentException($"--max-prefill-batch must be >= 1 (got {MaxPrefillBatch})");
        if (MaxPrefillTokens < 1) throw new ArgumentException($"--max-prefill-tokens must be >= 1 (got {MaxPrefillTokens})");
        if (MaxQueue < 0) throw new ArgumentException($"--max-queue must be >= 0 (got {MaxQueue})");
        if (MaxAdapters < 1) throw new ArgumentException($"--max-adapters must be >= 1 (got {MaxAdapters})");
        if (!System.Net.IPAddress.TryParse(Host, out _) && Host != "localhost") throw new ArgumentException($"--host '{Host}' is not an IP address");
        if (AdapterRoot is not null && !Directory.Exists(AdapterRoot)) throw new ArgumentException($"--adapter-root '{AdapterRoot}' does not exist");
        if (ApiKey is "") throw new ArgumentException("--api-key must not be empty");
    }
}
