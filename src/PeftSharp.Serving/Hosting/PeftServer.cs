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
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Hosting;

/// <summary>
/// The OpenAI-compatible server: Kestrel on one address, a batch worker owning the model, an adapter registry.
/// <see cref="StartAsync"/> returns once it listens; disposing drains in-flight requests (up to the grace) and stops.
/// </summary>
public sealed class PeftServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly CausalLM? _ownedModel;
    readonly TextTokenizer? _ownedTokenizer;
    int _stopped;

    PeftServer(WebApplication app, ServerState state, CausalLM? ownedModel, TextTokenizer? ownedTokenizer)
    {
        _app = app;
        State = state;
        _ownedModel = ownedModel;
        _ownedTokenizer = ownedTokenizer;
    }

    public ServerState State { get; }
    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>Loads the model folder (dense or quantised, as <paramref name="load"/> says) and serves it.</summary>
    public static async Task<PeftServer> StartAsync(string modelDir, ServerOptions options, IAdapterLoader loader, LoadOptions? load = null)
    {
        options.Validate();
        var model = ModelLoader.Load(modelDir, load ?? new LoadOptions());
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

    /// <summary>Serves an already loaded model (the caller keeps ownership of model and tokenizer).</summary>
    public static Task<PeftServer> StartAsync(CausalLM model, TextTokenizer tokenizer, string servedName, ServerOptions options, IAdapterLoader loader)
    {
        options.Validate();
        return StartCoreAsync(model, tokenizer, servedName, options, loader, owned: false);
    }

    static async Task<PeftServer> StartCoreAsync(CausalLM model, TextTokenizer tok, string name, ServerOptions o, IAdapterLoader loader, bool owned)
    {
        var scheduler = new BatchScheduler(model, o.MaxBatch, o.MaxQueue);
        try
        {
            var registry = new AdapterRegistry(loader, scheduler, name, o.AdapterRoot, o.MaxAdapters);
            foreach (var (n, dir) in o.Adapters) await registry.LoadAsync(n, dir);
            var state = new ServerState(model.Config, tok, scheduler, registry, o);
            var app = Build(state);
            var server = new PeftServer(app, state, owned ? model : null, owned ? tok : null);
            await app.StartAsync();
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            server.BaseAddress = new Uri(address.EndsWith('/') ? address : address + "/");
            return server;
        }
        catch
        {
            scheduler.Dispose();
            throw;
        }
    }

    static WebApplication Build(ServerState s)
    {
        var o = s.Options;
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
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
        app.Use(ErrorHandling.Middleware);
        app.Use((http, next) => ApiKeyCheck.Middleware(http, next, o.ApiKey));
        app.MapGet("/v1/models", http => ModelsEndpoint.Handle(http, s));
        app.MapPost("/v1/completions", http => GenerationEndpoint.Handle(http, s, chat: false));
        app.MapPost("/v1/chat/completions", http => GenerationEndpoint.Handle(http, s, chat: true));
        app.MapPost("/v1/adapters", http => AdaptersEndpoint.Load(http, s));
        app.MapDelete("/v1/adapters/{name}", http => AdaptersEndpoint.Unload(http, s, (string)http.Request.RouteValues["name"]!));
        app.MapFallback(http => throw ServingException.NotFound($"no endpoint {http.Request.Method} {http.Request.Path}"));
        return app;
    }

    /// <summary>Blocks until the host is told to stop (Ctrl+C / SIGTERM).</summary>
    public Task WaitForShutdownAsync() => _app.WaitForShutdownAsync();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1) return;
        await _app.StopAsync();
        await _app.DisposeAsync();
        State.Scheduler.Dispose();
        State.Adapters.UnloadAll();   // runs inline now that the worker has stopped
        _ownedTokenizer?.Dispose();
        _ownedModel?.Dispose();
    }
}
