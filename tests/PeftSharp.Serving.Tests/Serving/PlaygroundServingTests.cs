using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using PeftSharp.Serving.Hosting;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Serving;

/// <summary>The playground's files and the adapter card endpoint, over HTTP (the browser test drives the page itself).</summary>
[Collection("console")]
public class PlaygroundServingTests(ITestOutputHelper output)
{
    [Fact]
    public async Task PageIsServedFromTheAssemblyWithoutTheKeyWithTypesAndRevalidation()
    {
        await using var h = await ServingHarness.Start(new ServerOptions { ApiKey = "sekret" });
        using var page = await h.Http.GetAsync("");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);                            // public: the page asks for the key itself
        Assert.Equal("text/html; charset=utf-8", page.Content.Headers.ContentType!.ToString());
        Assert.Equal("no-cache", page.Headers.CacheControl!.ToString());
        Assert.Equal("nosniff", page.Headers.GetValues("X-Content-Type-Options").Single());
        Assert.Contains("default-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single());
        string html = await page.Content.ReadAsStringAsync();
        Assert.Contains("<script src=\"/playground/app.js\"", html);
        Assert.DoesNotContain("http://", html.Replace("http://127.0.0.1", ""));      // no CDN: nothing from elsewhere
        Assert.DoesNotContain("https://", html);

        using (var js = await h.Http.GetAsync("playground/app.js"))
        {
            Assert.Equal("text/javascript; charset=utf-8", js.Content.Headers.ContentType!.ToString());
            Assert.Contains("/v1/chat/completions", await js.Content.ReadAsStringAsync());
        }
        using (var css = await h.Http.GetAsync("playground/style.css")) Assert.Equal("text/css; charset=utf-8", css.Content.Headers.ContentType!.ToString());

        // A browser revalidating with the ETag gets 304 and no body.
        using var again = new HttpRequestMessage(HttpMethod.Get, "");
        again.Headers.IfNoneMatch.Add(page.Headers.ETag!);
        using var notModified = await h.Http.SendAsync(again);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
        Assert.Empty(await notModified.Content.ReadAsByteArrayAsync());

        // The key rules of /v1 are unchanged; other paths stay 404 (behind the key check, as before).
        using var models = await h.Http.GetAsync("v1/models");
        Assert.Equal(HttpStatusCode.Unauthorized, models.StatusCode);
        using var post = await h.Http.PostAsync("", new StringContent("{}"));
        Assert.NotEqual(HttpStatusCode.OK, post.StatusCode);
    }

    [Fact]
    public async Task CardShowsMethodTargetsBaseCheckTrainingDataAndTheRunsHeadlineNumbers()
    {
        var (root, a, b) = PlaygroundAdapters.Make(output);
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, ApiKey = "sekret", Adapters = [("a", a), ("fixture", ServingHarness.LoraFixture)] });
        h.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sekret");
        var (status, loaded) = await h.Post("v1/adapters", new JsonObject { ["name"] = "b", ["path"] = "run-b/final" });
        Assert.True(status == 200, loaded.ToJsonString());

        var card = JsonNode.Parse(await h.Http.GetStringAsync("v1/adapters/b/card"))!;
        output.WriteLine(card.ToJsonString());
        var summary = PlaygroundAdapters.Summary(b);
        Assert.Equal("LORA", card["peft_type"]!.GetValue<string>());
        Assert.Equal(2, card["rank"]!.GetValue<int>());
        Assert.Equal("all-linear", card["target_modules"]!.GetValue<string>());   // as adapter_config.json says
        Assert.Contains("on 14 modules", card["results"]!["description"]!.GetValue<string>());
        Assert.Equal("same", card["base"]!["match"]!.GetValue<string>());             // trained on this base, default targets
        Assert.Equal("run-b", card["run"]!.GetValue<string>());
        Assert.Equal("task0.jsonl", card["training"]!["data"]!.GetValue<string>());   // the file name, not the server's path
        Assert.Equal(3, card["training"]!["steps"]!.GetValue<int>());
        Assert.StartsWith("8 examples -> ", card["training"]!["data_stats"]!.GetValue<string>());   // from summary.json
        Assert.Null(card["training"]!["adapter-method"]);                                          // not a preference run
        foreach (var key in new[] { "eval_loss_before", "eval_loss_after", "exact_match_after", "trainable_params" })
            Assert.Equal(summary[key]!.ToJsonString(), card["results"]![key]!.ToJsonString());

        // Python PEFT's fixture records no fingerprint and comes from no run; its config still gives the targets.
        var fixture = JsonNode.Parse(await h.Http.GetStringAsync("v1/adapters/fixture/card"))!;
        Assert.Equal("not_recorded", fixture["base"]!["match"]!.GetValue<string>());
        Assert.Equal(["q_proj", "v_proj"], fixture["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()));
        Assert.Null(fixture["training"]);
        Assert.Null(fixture["results"]);
        var saved = JsonNode.Parse(await h.Http.GetStringAsync("v1/adapters/a/card"))!;
        Assert.Equal(saved["base"]!["served_fingerprint"]!.GetValue<string>(), saved["base"]!["recorded_fingerprint"]!.GetValue<string>());

        using var unknown = await h.Http.GetAsync("v1/adapters/nope/card");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Contains("adapter 'nope' not found", JsonNode.Parse(await unknown.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
        h.Http.DefaultRequestHeaders.Authorization = null;
        using var noKey = await h.Http.GetAsync("v1/adapters/b/card");
        Assert.Equal(HttpStatusCode.Unauthorized, noKey.StatusCode);
    }
}
