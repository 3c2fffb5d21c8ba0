using System.Text.Json.Nodes;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Serving;

/// <summary>Serving dispatches on the registry's peft_type: a Houlsby adapter or soft prompt is named and refused, nothing loaded.</summary>
public class NonLoraAdapterTests
{
    [Fact]
    public async Task AHoulsbyAdapterIsRefusedByItsPeftType()
    {
        string root = TestPaths.TempDir();
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            model.AddAdapter("h", new HoulsbyConfig());
            model.SaveAdapter("h", Path.Combine(root, "houlsby"));
        }
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        var (status, body) = await h.Post("v1/adapters", new JsonObject { ["name"] = "houlsby", ["path"] = "houlsby" });
        Assert.Equal(400, status);
        Assert.Contains("a PEFTSHARP_HOULSBY adapter cannot be served", body["error"]!["message"]!.GetValue<string>());
        Assert.Empty(LoraModel.Of(h.Model).Adapters);
        Assert.All(h.Model.Layers, l => Assert.Null(l.AfterAttention));
    }
}
