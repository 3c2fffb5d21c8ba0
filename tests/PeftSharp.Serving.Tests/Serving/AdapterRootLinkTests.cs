using System.Text.Json.Nodes;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Serving;

/// <summary>--adapter-root confines every file a runtime load opens, not only the folder named.</summary>
public class AdapterRootLinkTests
{
    static JsonObject LoadBody(string name, string path) => new() { ["name"] = name, ["path"] = path };

    /// <summary>An adapter folder under the root whose files are copies of <paramref name="source"/>'s, except the ones linked to <paramref name="links"/>.</summary>
    static void Folder(string dir, string source, params (string File, string Target)[] links)
    {
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(source))
            if (!links.Any(l => l.File == Path.GetFileName(f))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        foreach (var (file, target) in links) File.CreateSymbolicLink(Path.Combine(dir, file), target);
    }

    [Fact]
    public async Task FileLinksLeavingTheRootAre403AndNeverRead()
    {
        string root = TestPaths.TempDir(), elsewhere = TestPaths.TempDir();
        string outside = ServingHarness.SavedAdapter(Path.Combine(elsewhere, "outside"), seed: 5);   // a valid adapter: it would load
        string secret = Path.Combine(elsewhere, "passwd");
        File.WriteAllText(secret, "root:x:0:0:SECRET-CONTENT\n");
        string cfg = "adapter_config.json", weights = "adapter_model.safetensors";
        Folder(Path.Combine(root, "config-out"), outside, (cfg, Path.Combine(outside, cfg)));
        Folder(Path.Combine(root, "weights-out"), outside, (weights, Path.Combine(outside, weights)));
        Folder(Path.Combine(root, "passwd"), outside, (cfg, secret));
        Folder(Path.Combine(root, "extra-out"), outside, ("notes.json", secret));
        Folder(Path.Combine(root, "dangling"), outside, ("later.json", Path.Combine(elsewhere, "not-yet")));
        // Links that stay inside the root are fine (relative ones too). Only the config is linked here: a linked
        // safetensors file is sized by the link today (issue 16 item 6, SafeTensorsFile, not serving's).
        Folder(Path.Combine(root, "shared"), outside);
        Folder(Path.Combine(root, "inside"), outside, (cfg, Path.Combine("..", "shared", cfg)));

        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        foreach (var (name, file) in new[] { ("config-out", cfg), ("weights-out", weights), ("passwd", cfg), ("extra-out", "notes.json"), ("dangling", "later.json") })
        {
            var (status, body) = await h.Post("v1/adapters", LoadBody(name, name));
            string message = body["error"]!["message"]!.GetValue<string>();
            Assert.True(status == 403, $"{name}: {status} {message}");
            Assert.Equal("permission_error", body["error"]!["type"]!.GetValue<string>());
            Assert.Contains($"'{file}' is a link that resolves outside the adapter root", message);
            Assert.DoesNotContain("root:x", body.ToJsonString());
            Assert.DoesNotContain(elsewhere, message);   // not even where the link points
        }
        Assert.Empty(LoraModel.Of(h.Model).Adapters);
        var (okStatus, okBody) = await h.Post("v1/adapters", LoadBody("inside", "inside"));
        Assert.True(okStatus == 200, okBody.ToJsonString());
        Assert.Equal(ServingHarness.Reference(outside, h.Encode("linked"), 6), await h.CompletionText("inside", "linked", 6));
    }

    [Fact]
    public async Task AReloadRechecksTheFilesOfARuntimeLoadedAdapter()
    {
        string root = TestPaths.TempDir(), elsewhere = TestPaths.TempDir();
        string a = ServingHarness.SavedAdapter(Path.Combine(root, "a"), seed: 1);
        ServingHarness.SavedAdapter(Path.Combine(root, "b"), seed: 2);
        string outside = ServingHarness.SavedAdapter(Path.Combine(elsewhere, "outside"), seed: 5);
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, MaxAdapters = 1 });
        Assert.Equal(200, (await h.Post("v1/adapters", LoadBody("a", "a"))).Status);
        Assert.Equal(200, (await h.Post("v1/adapters", LoadBody("b", "b"))).Status);   // evicts a
        // a's config is swapped for a link out of the root while it is evicted: the reload on demand refuses it.
        File.Delete(Path.Combine(a, "adapter_config.json"));
        File.CreateSymbolicLink(Path.Combine(a, "adapter_config.json"), Path.Combine(outside, "adapter_config.json"));
        var (status, _) = await h.Post("v1/completions", new JsonObject { ["model"] = "a", ["prompt"] = "x", ["max_tokens"] = 2 });
        Assert.Equal(403, status);
    }
}
