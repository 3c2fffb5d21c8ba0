using System.Net.Http.Json;
using Microsoft.Extensions.AI;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Serving;
using PeftSharp.Tests.Training;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Contracts;

/// <summary>
/// The paths users take leave no tensor to the finalizer (<see cref="FinalizerLeaks"/>): every wrapper is disposed or
/// made inside a dispose scope. Before, saving an adapter (the caller's <c>p.detach()</c>), the base fingerprint, LoRA's
/// init (the kaiming chain) and <c>peft logits</c> dropped wrappers mid-expression: 12 per tiny adapter save, 28 per
/// <c>peft train</c>, 4 per <c>peft logits</c>.
/// </summary>
[Collection(SerialCollection.Name)]
public class NoTensorLeftForTheFinalizerTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);
    static string Adapter(string kind) => Path.Combine(TestPaths.TinyLlama, "adapters", kind);

    [Fact]
    public void FrontDoor()
    {
        string dir = TestPaths.TempDir();
        Assert.Equal(0, FinalizerLeaks.Count(() =>
        {
            using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"));
            using var ids = tensor(new long[,] { { 1, 5, 6 } });
            using (no_grad()) model.Forward(ids).Dispose();
            model.Generate(ids, new GenerationOptions { MaxNewTokens = 4 }).Dispose();
            model.Generate(ids, new GenerationOptions { MaxNewTokens = 4, Temperature = 0.8, TopP = 0.9, TopK = 20, Seed = 1 }).Dispose();
            Assert.NotNull(model.Generate("Once upon", 4));
            foreach (var _ in model.GenerateStream("Once upon", new GenerationOptions { MaxNewTokens = 4 })) { }
            model.AsChatClient().GetResponseAsync("hi", new ChatOptions { MaxOutputTokens = 4 }).GetAwaiter().GetResult();
            model.SaveAdapter("default", Path.Combine(dir, "saved"));
        }));
        Assert.Equal(0, FinalizerLeaks.Count(() =>
        {
            using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("dora"));
            model.MergeAndUnload();
            model.SavePretrained(Path.Combine(dir, "merged"));
        }));
        Assert.True(File.Exists(Path.Combine(dir, "saved", "adapter_model.safetensors")));
    }

    [Theory]
    [InlineData("lora")]
    [InlineData("dora")]
    [InlineData("qlora")]
    [InlineData("adapter")]
    [InlineData("prompt")]
    [InlineData("full")]
    public void TrainingWithCheckpoints(string method)
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 16);
        var o = new TrainerOptions
        {
            OutDir = Path.Combine(dir, "out"), LearningRate = 1e-3, MaxSteps = 4, BatchSize = 4, MaxSeqLength = 32, Seed = 5,
            MaxGradNorm = 1.0, SaveInterval = 2,
        };
        TrainResult? result = null;
        Assert.Equal(0, FinalizerLeaks.Count(() =>
        {
            var (model, m) = MethodFactory.Create(TestPaths.TinyLlama,
                new MethodOptions { Method = method, Rank = 4, Alpha = 8, ReductionFactor = 4, VirtualTokens = 4, Dropout = 0.1 }, Tok, CPU, seed: 3);
            using var _ = model;
            result = new Trainer(model, m, o, Tok.EosId).Train(TrainingData.Load(data, Tok, o.MaxSeqLength, o.Packing));
        }));
        Assert.Equal(4, result!.Steps);
    }

    [Fact]
    public void Commands()
    {
        string d = TestPaths.TempDir(), data = ReversalTask.Write(d, 8), golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors");
        string[][] commands =
        [
            ["quantize", "--model", TestPaths.TinyLlama, "--out", Path.Combine(d, "nf4")],
            ["logits", "--model", TestPaths.TinyLlama, "--input", golden, "--output", Path.Combine(d, "l.safetensors"), "--adapter", Adapter("dora")],
            ["merge", "--model", TestPaths.TinyLlama, "--adapter", Adapter("lora"), "--out", Path.Combine(d, "merged")],
            ["export", "gguf", "--model", TestPaths.TinyLlama, "--adapter", Adapter("lora"), "--out", Path.Combine(d, "m.gguf"), "--type", "q8_0"],
            ["export", "ollama", "--model", TestPaths.TinyLlama, "--adapter", Adapter("lora"), "--out", Path.Combine(d, "ollama"), "--type", "f16", "--separate-adapter"],
            ["export", "gguf-adapter", "--model", TestPaths.TinyLlama, "--adapter", Adapter("lora"), "--out", Path.Combine(d, "a.gguf")],
            ["generate", "--model", Path.Combine(d, "nf4"), "--adapter", Adapter("lora"), "--prompt", "hi", "--max-new-tokens", "4"],
            ["eval", "--model", TestPaths.TinyLlama, "--data", data],
            ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", Path.Combine(d, "lora"), "--method", "lora", "--steps", "3", "--batch", "2", "--eval-file", data, "--eval-interval", "2"],
            ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", Path.Combine(d, "qdora"), "--method", "qdora", "--steps", "2", "--batch", "2", "--optimizer", "paged-adamw-8bit"],
            ["train", "--model", TestPaths.TinyLlama, "--data", PreferencePairs.Write(d), "--out", Path.Combine(d, "dpo"), "--method", "dpo", "--steps", "2", "--batch", "2"],
        ];
        foreach (var args in commands)
        {
            (int Code, string Out, string Err) r = default;
            long leaked = FinalizerLeaks.Count(() => r = CliCapture.Run(args));
            Assert.True(r.Code == 0, $"{string.Join(' ', args.Take(2))}: {r.Err}");
            Assert.True(leaked == 0, $"peft {string.Join(' ', args.Take(2))} left {leaked} tensors for the finalizer");
        }
    }

    /// <summary>Requests on the server's threads, several adapters, sampling, logprobs, echo and streaming at once.</summary>
    [Fact]
    public async Task Serving()
    {
        await using var h = await ServingHarness.Start(new ServerOptions { Adapters = [("lora", ServingHarness.LoraFixture), ("dora", ServingHarness.DoraFixture)] });
        async Task Requests()
        {
            var sent = new List<Task<HttpResponseMessage>>();
            foreach (var model in new[] { "tiny-llama", "lora", "dora" })
            {
                sent.Add(h.Http.PostAsJsonAsync("v1/completions", new { model, prompt = "Once upon a time", max_tokens = 6, temperature = 0 }));
                sent.Add(h.Http.PostAsJsonAsync("v1/completions", new { model, prompt = "Once upon a time", max_tokens = 6, temperature = 0.8, top_p = 0.9, seed = 3, logprobs = 2, echo = true }));
                sent.Add(h.Http.PostAsJsonAsync("v1/chat/completions", new { model, messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 6, stream = true }));
                sent.Add(h.Http.PostAsJsonAsync("v1/chat/completions", new { model, messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 6, logprobs = true, top_logprobs = 2 }));
            }
            foreach (var response in await Task.WhenAll(sent))
                using (response) { response.EnsureSuccessStatusCode(); await response.Content.ReadAsStringAsync(); }
        }
        await Requests();   // the server's caches filled first
        Assert.Equal(0, await FinalizerLeaks.CountAsync(Requests));
    }
}
