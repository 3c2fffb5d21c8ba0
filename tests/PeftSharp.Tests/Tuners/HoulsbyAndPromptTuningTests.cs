using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Houlsby;
using PeftSharp.Tuners.PromptTuning;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class HoulsbyAndPromptTuningTests
{
    static readonly long[] Ids = [5, 77, 120, 3, 9, 14];

    [Fact]
    public void FreshHoulsbyAdaptersAreTheIdentityAndSaveLoadRoundTrips()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var ids = tensor(Ids).unsqueeze(0);
        using var _ = no_grad();
        using var baseLogits = model.Forward(ids);
        var ps = HoulsbyAdapters.Attach(model, new HoulsbyConfig { ReductionFactor = 8 });
        Assert.Equal(2 * 2 * 4, ps.Count); // 2 layers x (attn, mlp) x (down w/b, up w/b)
        Assert.Equal(8, ps[0].P.shape[0]); // bottleneck 64 / 8
        using (var fresh = model.Forward(ids)) Assert.Equal(0.0, TestPaths.MaxAbsError(fresh, baseLogits));
        foreach (var (_, p) in ps) p.PlusInPlace(randn_like(p).Times(0.05));
        using var trained = model.Forward(ids);
        Assert.True(TestPaths.RelativeError(trained, baseLogits) > 1e-3);
        string dir = Path.Combine(TestPaths.TempDir(), "houlsby");
        HoulsbyAdapters.Save(model, new HoulsbyConfig { ReductionFactor = 8 }, dir);

        using var other = ModelLoader.Load(TestPaths.TinyLlama);
        var cfg = HoulsbyAdapters.Load(other, dir);
        Assert.Equal(8, cfg.ReductionFactor);
        using var reloaded = other.Forward(ids);
        Assert.Equal(0.0, TestPaths.MaxAbsError(reloaded, trained));
    }

    [Fact]
    public void HoulsbyGradientsReachOnlyAdapters()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var ps = HoulsbyAdapters.Attach(model, new HoulsbyConfig());
        using var ids = tensor(Ids).unsqueeze(0);
        using (var scope = NewDisposeScope())
        {
            var logits = model.Forward(ids);
            nn.functional.cross_entropy(logits.view(-1, 260), ids.view(-1)).backward();
        }
        Assert.All(model.parameters(), p => Assert.Null(p.grad));
        Assert.Contains(ps, p => p.P.grad is { } g && g.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void TextInitialisedPromptEqualsPrependingThoseTokens()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        int[] textIds = [40, 41, 42];
        var cfg = new PromptTuningConfig { NumVirtualTokens = 5, Init = PromptInit.Text, InitText = "xyz" };
        using var _ = no_grad();
        // PEFT repeats the text's tokens to fill N virtual tokens: 40 41 42 40 41; the logits of the real tokens are compared.
        using var explicitIds = tensor(new long[] { 40, 41, 42, 40, 41 }.Concat(Ids).ToArray()).unsqueeze(0);
        using var expected = model.Forward(explicitIds).narrow(1, 5, Ids.Length);
        using var prompt = PromptEmbeddings.Create(model, cfg, _ => textIds).AttachTo(model);
        using var ids = tensor(Ids).unsqueeze(0);
        using var logits = model.Forward(ids);
        Assert.Equal(expected.shape, logits.shape);
        Assert.True(TestPaths.RelativeError(logits, expected) < 1e-6);
    }

    [Fact]
    public void PromptEmbeddingsSaveInPeftFormat()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var prompt = PromptEmbeddings.Create(model, new PromptTuningConfig { NumVirtualTokens = 4, Init = PromptInit.Random }, seed: 3);
        string dir = Path.Combine(TestPaths.TempDir(), "prompt");
        prompt.Save(model, dir, "tiny-llama");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal("PROMPT_TUNING", cfg["peft_type"]!.GetValue<string>());
        Assert.Equal(64, cfg["token_dim"]!.GetValue<int>());
        using var f = new SafeTensorsFile(Path.Combine(dir, "adapter_model.safetensors"));
        Assert.Equal([4L, 64L], f.Info("prompt_embeddings").Shape);
        using var loaded = PromptEmbeddings.Load(model, dir);
        Assert.Equal(0.0, TestPaths.MaxAbsError(loaded.Embeddings, prompt.Embeddings));
    }

    [Theory]
    [InlineData("{\"peft_type\": ", "not valid JSON")]
    [InlineData("[1, 2]", "not a JSON object")]
    public void MalformedAdapterConfigIsAnErrorNamingTheFile(string config, string reason)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        string dir = TestPaths.TempDir(), path = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        File.WriteAllText(path, config);
        foreach (Action load in new Action[] { () => HoulsbyAdapters.Load(model, dir), () => PromptEmbeddings.Load(model, dir).Dispose() })
        {
            var e = Assert.Throws<InvalidDataException>(load);
            Assert.Contains(path, e.Message);
            Assert.Contains(reason, e.Message);
        }
    }

    [Fact]
    public void PromptWithWrongHiddenSizeIsRefused()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        string dir = Path.Combine(TestPaths.TempDir(), "bad");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), """{"peft_type":"PROMPT_TUNING","num_virtual_tokens":4}""");
        using var t = zeros(4, 32);
        SafeTensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), [("prompt_embeddings", t)]);
        var e = Assert.Throws<InvalidDataException>(() => PromptEmbeddings.Load(model, dir));
        Assert.Contains("[4, 32]", e.Message);
        Assert.Contains("[4, 64]", e.Message);
    }
}

/// <summary>
/// Prompt tuning's TEXT init through the public API, against PEFT's rule: the virtual tokens start as the embeddings of
/// tokenizer(init_text)["input_ids"] (default special tokens: a Llama BOS first), repeated to the length. The text
/// used to be encoded without its BOS, so a Llama model's prompt started from other rows than PEFT's.
/// </summary>
public class PromptTuningTextInitTests
{
    [Fact]
    public void TextInitStartsFromTheTokenizersDefaultEncodingWithBos()
    {
        if (RealFixtures.Folder("tinystories-260k") is not { } real) return;
        string folder = Path.Combine(real, "hf"), dir = Path.Combine(TestPaths.TempDir(), "prompt");
        using var model = PeftSharp.PeftModel.FromPretrained(folder);
        model.AddAdapter("p", new PromptTuningConfig { NumVirtualTokens = 7, Init = PromptInit.Text, InitText = "Once upon a time" });
        model.SaveAdapter("p", dir);
        int[] ids = model.Tokenizer.Encode("Once upon a time", addSpecialTokens: true);
        Assert.Equal(1, ids[0]);   // stories260K's <s>
        using var saved = new SafeTensorsFile(Path.Combine(dir, "adapter_model.safetensors"));
        using var weights = new SafeTensorsFile(Path.Combine(folder, "model.safetensors"));
        using var prompt = saved.Load("prompt_embeddings");
        using var embed = weights.Load("model.embed_tokens.weight");
        using var expected = embed.index_select(0, tensor(Enumerable.Range(0, 7).Select(i => (long)ids[i % ids.Length]).ToArray()));
        Assert.True(prompt.to(ScalarType.Float32).allclose(expected), "the prompt's rows are not the text's token embeddings");
    }
}
