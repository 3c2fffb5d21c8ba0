using System.Net;
using System.Reflection;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PeftSharp.Serving.Dashboard;

/// <summary>
/// The training dashboard (`peft dashboard DIR`, `peft train --dashboard`): Kestrel on 127.0.0.1 serving a page embedded in
/// this assembly (wwwroot/: plain HTML, CSS and JS drawing SVG charts; no CDN, works offline) and a JSON API the page polls:
/// GET /api/runs (the run names), GET /api/metrics?run=NAME&amp;offset=B&amp;line=L (the metrics.jsonl records after byte B,
/// at most <see cref="MetricsTail.MaxChunkBytes"/> of them, <c>more</c> set when the file holds more; see
/// <see cref="MetricsTail"/>; with the run's plan and summary). It lives here, beside `peft serve`, so that the
/// training library stays free of ASP.NET Core; it reads only files, so it shows a run trained by another process too.
/// </summary>
internal sealed class DashboardServer : IAsyncDisposable
{
    readonly WebApplication _app;
    public Uri BaseAddress { get; }
    public DashboardRuns Runs { get; }

    DashboardServer(WebApplication app, Uri address, DashboardRuns runs) { _app = app; BaseAddress = address; Runs = runs; }

    /// <summary>
    /// Starts serving <paramref name="folder"/> (a run folder or a compare folder) on 127.0.0.1:<paramref name="port"/>
    /// (0 = any free port); returns once it listens. <paramref name="live"/>: the folder of a run about to start, which may
    /// hold no metrics.jsonl yet. A port in use is a <see cref="DashboardPortInUseException"/>.
    /// </summary>
    public static async Task<DashboardServer> StartAsync(string folder, int port, bool live = false)
    {
        var runs = DashboardRuns.Open(folder, live);
        runs.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();   // the training progress owns the console
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, port));
        var app = builder.Build();
        app.MapGet("/", http => Static(http, "index.html"));
        app.MapGet("/{file}", http => Static(http, (string)http.Request.RouteValues["file"]!));
        app.MapGet("/api/runs", () => Results.Json(new JsonObject
        {
            ["folder"] = runs.Folder, ["runs"] = new JsonArray([.. runs.Names().Select(n => (JsonNode)n!)]),
        }));
        app.MapGet("/api/metrics", (string run, long? offset, int? line) => Metrics(runs, run, offset ?? 0, line ?? 0));
        try { await app.StartAsync(); }
        catch (IOException e)
        {
            await app.DisposeAsync();
            throw new DashboardPortInUseException($"127.0.0.1:{port} is in use; pass another port, or 0 for any free one", e);
        }
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new DashboardServer(app, new Uri(address.EndsWith('/') ? address : address + "/"), runs);
    }

    static IResult Metrics(DashboardRuns runs, string run, long offset, int line)
    {
        if (runs.Dir(run) is not { } dir) return Results.Json(new JsonObject { ["error"] = $"no run '{run}' in {runs.Folder}" }, statusCode: 404);
        try
        {
            var chunk = MetricsTail.Read(Path.Combine(dir, DashboardRuns.MetricsFile), offset, line);
            var info = DashboardRuns.Info(dir);
            info["records"] = new JsonArray([.. chunk.Records.Select(r => r.DeepClone())]);
            info["offset"] = chunk.Offset;
            info["line"] = chunk.Line;
            info["reset"] = chunk.Reset;
            info["more"] = chunk.More;
            return Results.Json(info);
        }
        catch (InvalidDataException e) { return Results.Json(new JsonObject { ["error"] = e.Message }, statusCode: 500); }
    }

    /// <summary>wwwroot files, embedded as resources named PeftSharp.Serving.Dashboard.wwwroot.FILE.</summary>
    static async Task Static(HttpContext http, string file)
    {
        var type = Path.GetExtension(file) switch { ".html" => "text/html", ".js" => "text/javascript", ".css" => "text/css", ".svg" => "image/svg+xml", _ => null };
        using var stream = type is null ? null : Assembly.GetExecutingAssembly().GetManifestResourceStream($"PeftSharp.Serving.Dashboard.wwwroot.{file}");
        if (stream is null) { http.Response.StatusCode = 404; await http.Response.WriteAsync($"no file {file}"); return; }
        http.Response.ContentType = type + "; charset=utf-8";
        http.Response.Headers.CacheControl = "no-cache";
        await stream.CopyToAsync(http.Response.Body);
    }

    /// <summary>Blocks until <paramref name="token"/> is cancelled (Ctrl-C).</summary>
    public async Task WaitAsync(CancellationToken token)
    {
        try { await Task.Delay(Timeout.Infinite, token); }
        catch (OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>The dashboard's port is taken by another process.</summary>
internal sealed class DashboardPortInUseException(string message, Exception inner) : IOException(message, inner);
