using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using PeftSharp.Serving.Hosting;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// The playground as a person uses it, in headless Chromium against a real `serve` on loopback (tiny-llama base, a
/// saved adapter "a" and a `peft train` run's adapter "b", with an API key): key, prompt to all three at once,
/// streamed columns equal to the API's own answers for the same seeded requests, cards, load/unload, and the errors
/// (401, empty prompt, unknown adapter, server gone) as readable text. Screenshots go to the test output's screenshots/.
/// Skipped with a printed reason when no Chromium is installed.
/// </summary>
[Collection("console")]
public class PlaygroundBrowserTests(ITestOutputHelper output)
{
    const string Key = "sekret";
    const string Prompt = "abc ->";

    [Fact]
    public async Task StreamsBaseAndTwoAdaptersSideBySideAsTheApiAnswersAndShowsErrorsReadably()
    {
        await using var chromium = await HeadlessChromium.Launch(output);
        if (chromium is null) return;
        var (root, a, b) = PlaygroundAdapters.Make(output);
        await using var h = await ServingHarness.Start(new ServerOptions { ApiKey = Key, AdapterRoot = root, Adapters = [("a", a), ("b", b)] });
        h.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
        var page = await chromium.NewPage();
        await page.GotoAsync(h.Server.BaseAddress.ToString());

        // 401 before the key is given, then the models after Connect.
        await HeadlessChromium.WaitFor(page, "!document.getElementById('banner').hidden", "the 401 banner");
        string banner = await page.TextContentAsync("#banner") ?? "";
        Assert.Contains("401", banner);
        Assert.Contains("API key", banner);
        await page.FillAsync("#api-key", Key);
        await page.ClickAsync("#connect");
        await HeadlessChromium.WaitFor(page, "document.querySelectorAll('#models li[data-model]').length === 3", "the three models");
        Assert.True(await page.IsHiddenAsync("#banner"));
        Assert.Equal(["tiny-llama", "a", "b"], await page.EvalOnSelectorAllAsync<string[]>("#models li[data-model]", "els => els.map(e => e.dataset.model)"));
        // The cards: "a" records this base's fingerprint; "b" names its training data and run numbers.
        Assert.Contains("fingerprint matches the served base", await page.TextContentAsync("#models li[data-model='a']"));
        string cardB = await page.TextContentAsync("#models li[data-model='b']") ?? "";
        Assert.Contains("task0.jsonl", cardB);
        Assert.Contains("eval loss", cardB);

        // Empty prompt: a message, no request.
        await page.ClickAsync("#send");
        Assert.Contains("prompt is empty", await page.TextContentAsync("#send-status"));
        Assert.Equal(0, await page.Locator(".column").CountAsync());

        // Completion to all three with fixed sampling settings; each column equals the API's non-streamed answer.
        await page.FillAsync("#temperature", "0.8");
        await page.FillAsync("#top-p", "0.9");
        await page.FillAsync("#max-tokens", "12");
        await page.FillAsync("#seed", "7");
        await page.FillAsync("#prompt", Prompt);
        var answers = await SendAndRead(page, 3);
        foreach (var model in new[] { "tiny-llama", "a", "b" })
        {
            var body = await Api("v1/completions", new JsonObject { ["model"] = model, ["prompt"] = Prompt, ["temperature"] = 0.8, ["top_p"] = 0.9, ["max_tokens"] = 12, ["seed"] = 7 }, h);
            Assert.Equal(body["choices"]![0]!["text"]!.GetValue<string>(), answers[model].Text);
            Assert.StartsWith($"{body["usage"]!["completion_tokens"]} tokens · ", answers[model].Stats);   // counts from the usage chunk
        }
        Assert.NotEqual(answers["a"].Text, answers["tiny-llama"].Text);   // the adapters change the answer: the columns are not one model
        await chromium.Screenshot(page, "playground");

        // Chat, rendered by the server with the model's template: the same equality.
        await page.CheckAsync("input[name=mode][value=chat]");
        await page.FillAsync("#prompt", "Reverse abc");
        var chat = await SendAndRead(page, 3);
        foreach (var model in new[] { "tiny-llama", "a", "b" })
        {
            var body = await Api("v1/chat/completions", new JsonObject
            {
                ["model"] = model, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Reverse abc" }),
                ["temperature"] = 0.8, ["top_p"] = 0.9, ["max_tokens"] = 12, ["seed"] = 7,
            }, h);
            Assert.Equal(body["choices"]![0]!["message"]!["content"]!.GetValue<string>(), chat[model].Text);
        }

        // Load and unload through the page (the existing /v1/adapters endpoints, from --adapter-root): a DoRA adapter,
        // whose card names DoRA (PEFT's adapter_config.json says LORA with use_dora), where "a"'s says LORA.
        string dora = Path.Combine(root, "dora");
        Directory.CreateDirectory(dora);
        foreach (var f in Directory.GetFiles(Path.Combine(TestPaths.TinyLlama, "adapters", "dora"))) File.Copy(f, Path.Combine(dora, Path.GetFileName(f)));
        await page.FillAsync("#load-name", "c");
        await page.FillAsync("#load-path", "dora");
        await page.ClickAsync("#load-form button[type=submit]");
        await HeadlessChromium.WaitFor(page, "document.querySelector(\"#models li[data-model='c']\") !== null", "adapter c in the list");
        Assert.Contains("loaded c (version 1)", await page.TextContentAsync("#load-status"));
        await HeadlessChromium.WaitFor(page, "(document.querySelector(\"#models li[data-model='c']\").textContent || '').includes('alpha')", "adapter c's card");
        Assert.Contains("methodDORA,alpha", (await page.TextContentAsync("#models li[data-model='c']") ?? "").Replace(" ", ""));
        Assert.Contains("methodLORA,alpha", (await page.TextContentAsync("#models li[data-model='a']") ?? "").Replace(" ", ""));
        await page.FillAsync("#load-name", "d");
        await page.FillAsync("#load-path", "../outside");
        await page.ClickAsync("#load-form button[type=submit]");
        await HeadlessChromium.WaitFor(page, "document.getElementById('load-status').classList.contains('error')", "the refused load");
        Assert.Contains("not found under the adapter root", await page.TextContentAsync("#load-status"));
        await page.ClickAsync("#models li[data-model='c'] button");
        await HeadlessChromium.WaitFor(page, "document.querySelector(\"#models li[data-model='c']\") === null", "adapter c gone from the list");

        // Unknown adapter: "a" unloaded behind the page's back; its column says so, the others still answer.
        using (var del = await h.Http.DeleteAsync("v1/adapters/a")) Assert.True(del.IsSuccessStatusCode);
        await page.CheckAsync("input[name=mode][value=completion]");
        await page.FillAsync("#prompt", Prompt);
        var stale = await SendAndRead(page, 3);
        Assert.Equal("error", stale["a"].State);
        Assert.Contains("404 model_not_found: model 'a' not found", stale["a"].Error);
        Assert.Equal("done", stale["b"].State);
        await HeadlessChromium.WaitFor(page, "document.querySelector(\"#models li[data-model='a']\") === null", "the list to drop the unloaded adapter");
        await chromium.Screenshot(page, "playground-unknown-adapter");

        // Server gone: every column (base and b: the list dropped a) says the server cannot be reached.
        await h.Server.DisposeAsync();
        var gone = await SendAndRead(page, 2);
        Assert.Equal(["tiny-llama", "b"], gone.Keys);
        Assert.All(gone.Values, c => Assert.Contains("cannot reach the server", c.Error));
        await chromium.Screenshot(page, "playground-server-gone");
        Assert.DoesNotContain(chromium.PageErrors, e => e.StartsWith("page error"));   // no uncaught script error along the way
    }

    sealed record Column(string Text, string State, string Stats, string Error);

    /// <summary>Clicks Send and waits until every column has finished (done, error or stopped); returns them by model.</summary>
    static async Task<Dictionary<string, Column>> SendAndRead(IPage page, int columns)
    {
        await page.ClickAsync("#send");
        await HeadlessChromium.WaitFor(page, $"document.querySelectorAll('.column').length === {columns} && " +
            "[...document.querySelectorAll('.column .output')].every(o => o.dataset.state !== 'streaming')", "every column to finish", 120_000);
        var rows = await page.EvalOnSelectorAllAsync<string[][]>(".column", "cols => cols.map(c => [c.dataset.model, " +
            "c.querySelector('.output').textContent, c.querySelector('.output').dataset.state, c.querySelector('.stats').textContent, c.querySelector('.error').textContent])");
        return rows.ToDictionary(r => r[0], r => new Column(r[1], r[2], r[3], r[4]));
    }

    static async Task<JsonObject> Api(string path, JsonObject request, ServingHarness h)
    {
        var (status, body) = await h.Post(path, request);
        Assert.True(status == 200, body.ToJsonString());
        return body;
    }
}
