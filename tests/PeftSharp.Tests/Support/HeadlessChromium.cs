using Microsoft.Playwright;
using Xunit.Abstractions;

namespace PeftSharp.Tests;

/// <summary>
/// Headless Chromium for browser tests, driven through Microsoft.Playwright with the system's own browser
/// (Debian's <c>chromium</c>; Playwright's browser download is never used, so this works offline). Playwright's
/// node driver ships inside the NuGet package. The browser is found through <c>PEFTSHARP_CHROMIUM</c> or PATH
/// (chromium, chromium-browser, google-chrome); without one, <see cref="Launch"/> prints why and returns null, and
/// the test returns early (skipped with a printed reason, as the other optional-dependency tests do).
/// <para>
/// Playwright starts the browser as its own process group and kills the group when the browser is closed or the
/// driver's pipe to this process breaks (a crashed test run), so no Chromium outlives a test. <see cref="DisposeAsync"/>
/// closes it even when the test failed (use <c>await using</c>).
/// </para>
/// </summary>
public sealed class HeadlessChromium : IAsyncDisposable
{
    readonly IPlaywright _playwright;
    readonly ITestOutputHelper _output;
    readonly List<string> _pageErrors = [];

    HeadlessChromium(IPlaywright playwright, IBrowser browser, ITestOutputHelper output)
    {
        _playwright = playwright;
        Browser = browser;
        _output = output;
    }

    public IBrowser Browser { get; }

    /// <summary>Uncaught script errors and console.error lines of every page opened here (a test can assert none).</summary>
    public IReadOnlyList<string> PageErrors { get { lock (_pageErrors) return _pageErrors.ToList(); } }

    /// <summary>Where screenshots go: the test output folder's screenshots/ (kept after the run for a look by eye).</summary>
    public static string ScreenshotDir => Path.Combine(AppContext.BaseDirectory, "screenshots");

    /// <summary>The Chromium executable: PEFTSHARP_CHROMIUM, else the first of chromium / chromium-browser / google-chrome on PATH.</summary>
    public static string? Find(out string why)
    {
        string? env = Environment.GetEnvironmentVariable("PEFTSHARP_CHROMIUM");
        if (!string.IsNullOrEmpty(env))
        {
            why = File.Exists(env) ? "" : $"PEFTSHARP_CHROMIUM={env} does not exist";
            return File.Exists(env) ? env : null;
        }
        string[] names = ["chromium", "chromium-browser", "google-chrome"];
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            foreach (var name in names)
                if (File.Exists(Path.Combine(dir, name))) { why = ""; return Path.Combine(dir, name); }
        why = $"no Chromium found (set PEFTSHARP_CHROMIUM, or put one of {string.Join("/", names)} on PATH; Debian: apt-get install chromium)";
        return null;
    }

    /// <summary>Starts headless Chromium, or prints "SKIPPED: ..." to the test's output and returns null.</summary>
    public static async Task<HeadlessChromium?> Launch(ITestOutputHelper output)
    {
        string? exe = Find(out string why);
        if (exe is null) { output.WriteLine($"SKIPPED: {why}"); return null; }
        var playwright = await Playwright.CreateAsync();
        try
        {
            var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = exe,
                Headless = true,
                Timeout = 60_000,
                // Shared-memory and GPU are often missing in containers; neither is needed for a page test.
                Args = ["--disable-dev-shm-usage", "--disable-gpu"],
            });
            output.WriteLine($"headless Chromium {browser.Version} ({exe})");
            return new HeadlessChromium(playwright, browser, output);
        }
        catch
        {
            playwright.Dispose();
            throw;
        }
    }

    /// <summary>A new page (own context: no shared storage between pages) whose script errors are recorded.</summary>
    public async Task<IPage> NewPage(int width = 1400, int height = 900)
    {
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = width, Height = height } });
        var page = await context.NewPageAsync();
        page.SetDefaultTimeout(60_000);
        page.PageError += (_, e) => Record($"page error: {e}");
        page.Console += (_, m) => { if (m.Type == "error") Record($"console.error: {m.Text}"); };
        return page;
    }

    void Record(string line)
    {
        lock (_pageErrors) _pageErrors.Add(line);
        try { _output.WriteLine(line); } catch (InvalidOperationException) { }   // the test already finished
    }

    /// <summary>
    /// Waits until the JavaScript expression is truthy (fails the test with <paramref name="what"/> on timeout). Polled
    /// with page evaluations rather than Playwright's WaitForFunction, which evals its predicate inside the page and is
    /// refused by a page whose Content-Security-Policy forbids eval (as the playground's does).
    /// On timeout the message holds the page's visible text, to see what it showed instead.
    /// </summary>
    public static async Task WaitFor(IPage page, string expression, string what, int timeoutMs = 60_000)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!await page.EvaluateAsync<bool>($"!!({expression})"))
        {
            if (clock.ElapsedMilliseconds > timeoutMs)
                Assert.Fail($"timed out after {timeoutMs} ms waiting for {what} ({expression}); the page shows:\n{await page.EvaluateAsync<string>("document.body.innerText")}");
            await Task.Delay(50);
        }
    }

    /// <summary>A full-page PNG under <see cref="ScreenshotDir"/>; returns its path.</summary>
    public async Task<string> Screenshot(IPage page, string name)
    {
        Directory.CreateDirectory(ScreenshotDir);
        string path = Path.Combine(ScreenshotDir, name.EndsWith(".png") ? name : name + ".png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = true });
        _output.WriteLine($"screenshot: {path}");
        return path;
    }

    public async ValueTask DisposeAsync()
    {
        try { await Browser.CloseAsync(); }
        finally { _playwright.Dispose(); }
    }
}
