using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Endpoints;
using PeftSharp.Serving.Playground;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Hosting;

/// <summary>
/// The OpenAI-compatible server (what `peft serve` runs): Kestrel on one address, a batch worker owning the model, an
/// adapter registry. <c>StartAsync</c> returns once it listens; disposing drains in-flight requests (up to
/// <see cref="ServerOptions.ShutdownGrace"/>) and stops. The endpoints are those of src/PeftSharp.Serving/README.md.
/// </summary>
/// <example>
/// <code>
/// await using var server = await PeftServer.StartAsync("models/tiny", new ServerOptions { Port = 8000, Adapters = [("math", "runs/math/final")] }, new PeftAdapterLoader());
/// Console.WriteLine(server.BaseAddress);      // http://127.0.0.1:8000/ : point an OpenAI client at BaseAddress + "v1"
/// await server.WaitForShutdownAsync();        // Ctrl+C / SIGTERM
/// </code>
/// </example>
public sealed class PeftServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly CausalLM? _ownedModel;
    readonly TextTokenizer? _ownedTokenizer;
    readonly ILoggerFactory _logs;
    int _stopped;

    PeftServer(WebApplication app, ServerState state, CausalLM? ownedModel, TextTokenizer? ownedTokenizer, ILoggerFactory logs)
    {
        _app = app;
        _logs = logs;
        State = state;
        _ownedModel = ownedModel;
        _ownedTokenizer = ownedTokenizer;
    }

    /// <summary>What the endpoints share (scheduler, adapter registry, tokenizer); the CLI and the tests read it.</summary>
    internal ServerState State { get; }
    /// <summary>Where the server listens, ending in "/" (with <see cref="ServerOptions.Port"/> 0, the port picked).</summary>
    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>Loads a model folder (Hugging Face layout: config.json, safetensors, tokenizer; dense or as `peft
    /// quantize` wrote it) and serves it under <see cref="ServerOptions.ServedName"/> (default: the folder's name). The
    /// server owns the model and disposes it.</summary>
    /// <param name="modelDir">The model folder.</param>
    /// <param name="options">Address, limits, key, adapters; validated first.</param>
    /// <param name="loader">How adapter folders are loaded onto the model: <see cref="PeftAdapterLoader"/> for PEFT LoRA/DoRA.</param>
    /// <returns>The running server, once it listens.</returns>
    /// <exception cref="ArgumentException">An invalid option (the message names its `peft serve` flag).</exception>
    /// <exception cref="ServingException">A startup adapter that cannot load (not found, made for another base, unreadable).</exception>
    public static async Task<PeftServer> StartAsync(string modelDir, ServerOptions options, IAdapterLoader loader)
    {
        options.Validate();
        // The model's own chat template unless the caller chose one: serving a chat model in a made-up format would
        // answer, but badly, and silently.
        options = options.Chat is null ? options with { Chat = PeftSharp.Chat.ChatPrompter.ForModel(modelDir) } : options;
        var model = ModelLoader.Load(modelDir, new LoadOptions());
        TextTokenizer? tok = null;
        try
        {
            tok = TextTokenizer.FromFolder(modelDir, model.Config);
            string name = options.ServedName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)));
            return await StartCoreAsync(model, tok, name, options, loader, owned: true);
        }
        catch
        {
            tok?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>Serves an already loaded model (the caller keeps ownership of model and tokenizer, and must not use the
    /// model while the server runs: its batch worker owns it). Without <see cref="ServerOptions.Chat"/>, chat requests
    /// use the chat template of the folder holding the tokenizer's file.</summary>
    /// <param name="model">The base model.</param>
    /// <param name="tokenizer">Its tokenizer (encodes prompts, decodes replies, supplies the stop ids).</param>
    /// <param name="servedName">The model id clients use for the base.</param>
    /// <param name="options">Address, limits, key, adapters; validated first.</param>
    /// <param name="loader">How adapter folders are loaded onto the model: <see cref="PeftAdapterLoader"/> for PEFT LoRA/DoRA.</param>
    /// <returns>The running server, once it listens.</returns>
    /// <exception cref="ArgumentException">An invalid option (the message names its `peft serve` flag).</exception>
    /// <exception cref="ServingException">A startup adapter that cannot load (not found, made for another base, unreadable).</exception>
    public static Task<PeftServer> StartAsync(CausalLM model, TextTokenizer tokenizer, string servedName, ServerOptions options, IAdapterLoader loader)
    {
        options.Validate();
        if (options.Chat is null && System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(tokenizer.Path)) is { } dir && Directory.Exists(dir))
            options = options with { Chat = PeftSharp.Chat.ChatPrompter.ForModel(dir) };
        return StartCoreAsync(model, tokenizer, servedName, options, loader, owned: false);
    }

    static async Task<PeftServer> StartCoreAsync(CausalLM model, TextTokenizer tok, string name, ServerOptions o, IAdapterLoader loader, bool owned)
    {
        var logs = LoggerFactory.Create(b => ConfigureLogging(b, o));
        var scheduler = new BatchScheduler(model, o.MaxBatch, o.MaxQueue, o.MaxPrefillBatch ?? Math.Min(8, o.MaxBatch), o.MaxPrefillTokens);
        try
        {
            var registry = new AdapterRegistry(loader, scheduler, name, o.AdapterRoot, o.MaxAdapters, logs.CreateLogger<AdapterRegistry>());
            foreach (var (n, dir) in o.Adapters) await registry.LoadAsync(n, dir);
            var state = new ServerState(model.Config, tok, scheduler, registry, o);
            var app = Build(state, logs);
            var server = new PeftServer(app, state, owned ? model : null, owned ? tok : null, logs);
            await app.StartAsync();
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            server.BaseAddress = new Uri(address.EndsWith('/') ? address : address + "/");
            return server;
        }
        catch
        {
            scheduler.Dispose();
            logs.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The console (stderr) or the given providers, at --log-level. ASP.NET Core's own per-request information lines
    /// are left out unless --log-level is debug or trace; its warnings and errors always show.
    /// </summary>
    static void ConfigureLogging(ILoggingBuilder b, ServerOptions o)
    {
        b.SetMinimumLevel(o.LogLevel);
        if (o.LogLevel >= LogLevel.Information) b.AddFilter("Microsoft", LogLevel.Warning);
        if (o.LoggerProviders is null) b.AddSimpleConsole(c => c.SingleLine = true).AddConsole(c => c.LogToStandardErrorThreshold = LogLevel.Trace);
        else foreach (var p in o.LoggerProviders) b.AddProvider(p);
    }

    static WebApplication Build(ServerState s, ILoggerFactory logs)
    {
        var o = s.Options;
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        // One logger factory for the host and the registry, so both go where --log-level / LoggerProviders say.
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(logs);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = o.ShutdownGrace + TimeSpan.FromSeconds(5));
        builder.WebHost.UseKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = o.MaxBodyBytes;
            if (o.Host == "localhost") k.ListenLocalhost(o.Port);
            else k.Listen(IPAddress.Parse(o.Host), o.Port);
        });
        var app = builder.Build();
        // Stop admitting at shutdown and let running rows finish (cancelled after the grace).
        app.Lifetime.ApplicationStopping.Register(() => s.Scheduler.DrainAsync(o.ShutdownGrace).GetAwaiter().GetResult());
        var log = logs.CreateLogger<PeftServer>();
        app.Use((http, next) => ErrorHandling.Middleware(http, next, log));
        app.UsePlayground();   // the page at "/" is public; it asks for the key and sends it to /v1
        app.Use((http, next) => ApiKeyCheck.Middleware(http, next, o.ApiKey));
        app.MapGet("/v1/models", http => ModelsEndpoint.Handle(http, s));
        app.MapGet("/v1/models/{id}", http => ModelsEndpoint.HandleOne(http, s, (string)http.Request.RouteValues["id"]!));
        app.MapPost("/v1/completions", http => GenerationEndpoint.Handle(http, s, chat: false));
        app.MapPost("/v1/chat/completions", http => GenerationEndpoint.Handle(http, s, chat: true));
        app.MapPost("/v1/adapters", http => AdaptersEndpoint.Load(http, s));
        app.MapGet("/v1/adapters/{name}/card", http => AdapterCardEndpoint.Handle(http, s, (string)http.Request.RouteValues["name"]!));
        app.MapDelete("/v1/adapters/{name}", http => AdaptersEndpoint.Unload(http, s, (string)http.Request.RouteValues["name"]!));
        app.MapFallback(http => throw ServingException.NotFound($"no endpoint {http.Request.Method} {http.Request.Path}"));
        return app;
    }

    /// <summary>Blocks until the host is told to stop (Ctrl+C / SIGTERM).</summary>
    public Task WaitForShutdownAsync() => _app.WaitForShutdownAsync();

    /// <summary>Stops accepting requests, lets running ones finish (up to <see cref="ServerOptions.ShutdownGrace"/>),
    /// unloads the adapters and disposes what the server owns.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1) return;
        await _app.StopAsync();
        await _app.DisposeAsync();
        State.Scheduler.Dispose();
        State.Adapters.UnloadAll();   // runs inline now that the worker has stopped
        _ownedTokenizer?.Dispose();
        _ownedModel?.Dispose();
        _logs.Dispose();
    }
}
