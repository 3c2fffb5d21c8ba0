using System.Text.Json.Nodes;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Serving;

namespace PeftSharp.Tests.Hub;

/// <summary>serve's runtime loads (POST /v1/adapters) of a repo id. In the console collection: it sets HF_* variables.</summary>
[Collection("console")]
public class HubServeTests
{
    [Fact]
    public async Task RuntimeLoadOfARepoIdNeedsTheHubCacheUnderTheAdapterRoot()
    {
        await using var hub = await FakeHub.StartAsync();
        string lora = ServingHarness.LoraFixture;
        hub.Add("acme/tiny-lora", Directory.GetFiles(lora).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))));
        string home = TestPaths.TempDir();
        var saved = (Environment.GetEnvironmentVariable("HF_ENDPOINT"), Environment.GetEnvironmentVariable("HF_HOME"), Environment.GetEnvironmentVariable("HF_HUB_CACHE"), Environment.GetEnvironmentVariable("HF_HUB_OFFLINE"));
        Environment.SetEnvironmentVariable("HF_ENDPOINT", hub.EndpointString);
        Environment.SetEnvironmentVariable("HF_HOME", home);
        Environment.SetEnvironmentVariable("HF_HUB_CACHE", null);
        Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", null);
        try
        {
            var body = new JsonObject { ["name"] = "hub", ["path"] = "acme/tiny-lora" };
            await using (var elsewhere = await ServingHarness.Start(new ServerOptions { AdapterRoot = TestPaths.TempDir() }))
            {
                var (status, error) = await elsewhere.Post("v1/adapters", body);
                Assert.Equal(403, status);
                Assert.Contains("Hugging Face cache", error.ToJsonString());
                Assert.Empty(hub.Requests);                                   // refused before any download
            }
            await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = home });
            var (ok, _) = await h.Post("v1/adapters", body);
            Assert.Equal(200, ok);
            Assert.Equal(ServingHarness.Reference(lora, h.Encode("hello"), 6), await h.CompletionText("hub", "hello", 6));
            var (missing, _) = await h.Post("v1/adapters", new JsonObject { ["name"] = "nope", ["path"] = "acme/nope" });
            Assert.Equal(404, missing);
        }
        finally
        {
            Environment.SetEnvironmentVariable("HF_ENDPOINT", saved.Item1);
            Environment.SetEnvironmentVariable("HF_HOME", saved.Item2);
            Environment.SetEnvironmentVariable("HF_HUB_CACHE", saved.Item3);
            Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", saved.Item4);
        }
    }
}
