using Microsoft.Extensions.AI;
using PeftSharp.IO;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.FrontDoor;

/// <summary>The README's PeftModel snippet on the tiny fixture, through the public front door only.</summary>
[Collection("console")]
public class PeftModelTests
{
    static string Adapter(string kind) => Path.Combine(TestPaths.TinyLlama, "adapters", kind);
    static SafeTensorsFile Golden() => new(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));

    [Theory]
    [InlineData("lora", "logits_lora")]
    [InlineData("dora", "logits_dora")]
    public void FromPretrainedForwardReproducesPeftsGoldenLogits(string kind, string goldenKey)
    {
        using var golden = Golden();
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load(goldenKey);
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter(kind));
        Assert.Equal(["default"], model.AdapterNames);
        Assert.Equal("default", model.ActiveAdapter);
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        Assert.Equal(new[] { ids.shape[0], ids.shape[1], 260L }, logits.shape);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-5);
    }

    [Fact]
    public void DisableAdaptersGivesTheBaseInsideTheScopeOnly()
    {
        using var golden = Golden();
        using var ids = golden.Load("input_ids");
        using var baseLogits = golden.Load("logits");
        using var loraLogits = golden.Load("logits_lora");
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        using var _ = no_grad();
        using (model.DisableAdapters())
        {
            using var inside = model.Forward(ids);
            Assert.True(TestPaths.RelativeError(inside, baseLogits) <= 1e-6);
        }
        using var after = model.Forward(ids);
        Assert.True(TestPaths.RelativeError(after, loraLogits) <= 1e-5);
    }

    [Fact]
    public void GenerateIsTheGreedyContinuationOfRepeatedForwards()
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        const string prompt = "code red fox";
        string text = model.Generate(prompt, maxNewTokens: 8);
        // Reference without a KV cache: argmax of a full forward per step, stopping at EOS (id 259).
        var ids = model.Tokenizer.Encode(prompt, addSpecialTokens: true).ToList();
        int promptLength = ids.Count;
        using (no_grad())
            for (int step = 0; step < 8; step++)
            {
                using var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
                using var logits = model.Forward(input);
                int next = (int)logits[0, -1].argmax().item<long>();
                if (next == 259) break;
                ids.Add(next);
            }
        string expected = model.Tokenizer.Decode(ids)[model.Tokenizer.Decode(ids.Take(promptLength)).Length..];
        Assert.Equal(expected, text);
        Assert.Equal(text, string.Concat(model.GenerateStream(prompt, new GenerationOptions { MaxNewTokens = 8 })));
        // Ids in, ids out (HF's model.generate): the prompt then the same greedy ids.
        using var promptIds = tensor(ids.Take(promptLength).Select(i => (long)i).ToArray()).unsqueeze(0);
        using var outIds = model.Generate(promptIds, new GenerationOptions { MaxNewTokens = 8 });
        Assert.Equal(ids.Select(i => (long)i), outIds[0].data<long>().ToArray());
    }

    [Fact]
    public void AddedAdapterSavesAndReloadsBitExact()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "b");
        using var golden = Golden();
        using var ids = golden.Load("input_ids");
        using var baseLogits = golden.Load("logits");
        Tensor saved;
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora")))
        {
            // init_lora_weights=false: B is random too, so the fresh adapter changes the outputs (a real round trip).
            model.AddAdapter("b", new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False }, seed: 5);
            Assert.Equal(["default", "b"], model.AdapterNames);
            Assert.Equal("default", model.ActiveAdapter);
            model.SetAdapter("b");
            Assert.Equal("b", model.ActiveAdapter);
            model.SaveAdapter("b", dir);
            using var _ = no_grad();
            saved = model.Forward(ids);
        }
        using (saved)
        using (var reloaded = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: dir))
        {
            using var _ = no_grad();
            using var again = reloaded.Forward(ids);
            Assert.True(again.equal(saved).all().item<bool>(), "reloaded adapter logits differ from the saved adapter's");
            Assert.True(TestPaths.RelativeError(saved, baseLogits) > 1e-3, "the added adapter must change the outputs");
            Assert.DoesNotContain("peftsharp_base_fingerprint", File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
            Assert.Contains("\"base_fingerprint\"", File.ReadAllText(Path.Combine(dir, "peftsharp_adapter.json")));
        }
    }

    [Fact]
    public void MergeAndUnloadKeepsTheLogitsAndSavePretrainedLoadsWithPeftGenerate()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "merged");
        using var golden = Golden();
        using var ids = golden.Load("input_ids");
        using var loraLogits = golden.Load("logits_lora");
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        using var _ = no_grad();
        model.MergeAndUnload();
        Assert.Empty(model.AdapterNames);
        Assert.Null(model.ActiveAdapter);
        using var merged = model.Forward(ids);
        Assert.True(TestPaths.RelativeError(merged, loraLogits) <= 1e-5);

        model.SavePretrained(outDir);
        using (var reloaded = PeftModel.FromPretrained(outDir))
        using (var fromFolder = reloaded.Forward(ids))
            Assert.True(fromFolder.equal(merged).all().item<bool>());
        const string prompt = "code red fox";
        string expected = prompt + model.Generate(prompt, maxNewTokens: 6);
        var (code, stdout, stderr) = CliCapture.Run("generate", "--model", outDir, "--prompt", prompt, "--max-new-tokens", "6");
        Assert.True(code == 0, stderr);
        Assert.Equal(expected, stdout.TrimEnd('\n'));
    }

    [Fact]
    public void StopSequencesCutTheTextBeforeTheFirstStop()
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        string full = model.Generate("code red fox", maxNewTokens: 12);
        Assert.True(full.Length >= 4, $"continuation too short to test: '{full}'");
        string stop = full.Substring(2, 2);
        string cut = model.Generate("code red fox", maxNewTokens: 12, new GenerationOptions { StopSequences = [stop] });
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut);
    }

    [Fact]
    public async Task ADisposedModelRefusesEveryCallWithObjectDisposedAndDisposingAgainIsANoOp()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "after-dispose");
        var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        var chat = model.AsChatClient();
        model.Dispose();
        model.Dispose();
        using var ids = tensor(new long[] { 1, 2, 3 }).unsqueeze(0);
        var calls = new (string Name, Action Call)[]
        {
            ("Forward", () => model.Forward(ids)),
            ("Generate", () => model.Generate("code red fox", maxNewTokens: 2)),
            ("GenerateUpdates", () => model.GenerateUpdates([1, 2, 3])),
            ("SetAdapter", () => model.SetAdapter("default")),
            ("AddAdapter", () => model.AddAdapter("b", new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = ["q_proj"] })),
            ("LoadAdapter", () => model.LoadAdapter(Adapter("dora"), "dora")),
            ("SaveAdapter", () => model.SaveAdapter("default", outDir)),
            ("MergeAndUnload", () => model.MergeAndUnload()),
            ("SavePretrained", () => model.SavePretrained(outDir)),
            ("DisableAdapters", () => model.DisableAdapters()),
            ("ApplyChatTemplate", () => model.ApplyChatTemplate([("user", "hi")])),
            ("Train", () => model.Train()),
            ("AdapterNames", () => _ = model.AdapterNames),   // was [] (the list cleared), as if none had been loaded
            ("EndOfTurnIds", () => _ = model.EndOfTurnIds),   // read the freed tokenizer
            ("EncodeChat", () => model.EncodeChat([("user", "hi")])),
        };
        foreach (var (name, call) in calls)
        {
            var e = Record.Exception(call);
            Assert.True(e is ObjectDisposedException { ObjectName: "PeftSharp.PeftModel" }, $"{name} after Dispose: {e?.GetType().Name}: {e?.Message}");
        }
        // Nothing written from the freed weights.
        Assert.False(Directory.Exists(outDir));
        // The chat client over it says the same, through Microsoft.Extensions.AI.
        await Assert.ThrowsAsync<ObjectDisposedException>(() => chat.GetResponseAsync("hi"));
        chat.Dispose();
        chat.Dispose();
        var afterClient = await Record.ExceptionAsync(() => chat.GetResponseAsync("hi"));
        Assert.True(afterClient is ObjectDisposedException { ObjectName: "PeftSharp.PeftChatClient" }, afterClient?.ToString());
    }

    [Fact]
    public void AStreamStillBeingReadWhenTheModelIsDisposedEndsWithObjectDisposed()
    {
        var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        using var pieces = model.GenerateStream("code red fox", new GenerationOptions { MaxNewTokens = 40 }).GetEnumerator();
        Assert.True(pieces.MoveNext());
        model.Dispose();
        // Not "Tensor invalid -- empty handle" from a forward on the freed weights.
        var e = Record.Exception(() => { while (pieces.MoveNext()) { } });
        Assert.True(e is ObjectDisposedException { ObjectName: "PeftSharp.PeftModel" }, $"{e?.GetType().Name}: {e?.Message}");
    }

    [Fact]
    public void GenerateOnIdsLeavesNoLiveTensorBehindPerCall()
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
        using var ids = tensor(new long[] { 1, 5, 6 }).unsqueeze(0);
        var options = new GenerationOptions { MaxNewTokens = 3 };
        model.Generate(ids, options).Dispose();
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 20; i++)
        {
            using var generated = model.Generate(ids, options);
            Assert.Equal(6, generated.shape[1]);
        }
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
