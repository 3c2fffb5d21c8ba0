using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// A random tiny model of each new family through the commands a user runs: logits (against the float64
/// reference), generate, train --method qlora, merge, and inspect of the merged folder.
/// </summary>
[Collection("console")]
public class ModelFamilyCliTests
{
    public static TheoryData<string> Families => new() { "qwen3", "phi3", "gemma2", "mistral" };

    static JsonObject Config(string family)
    {
        // vocab 260 so the tiny Llama fixture's byte-level tokenizer fits.
        var c = family switch
        {
            "qwen3" => RandomModel.Qwen3Config(),
            "phi3" => RandomModel.Phi3Config(longRope: true, originalMax: 16),
            "gemma2" => RandomModel.Gemma2Config(layers: 2, window: 8),
            _ => RandomModel.LlamaConfig(modelType: "mistral"),
        };
        if (family == "mistral") c["sliding_window"] = 8;
        c["vocab_size"] = 260;
        c["eos_token_id"] = 259;
        return c;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Logits_generate_qlora_train_and_merge(string family)
    {
        string dir = RandomModel.Write(Config(family), seed: 4);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        string work = TestPaths.TempDir();

        // logits: the CLI's output against the float64 reference, past the window (24 tokens, window 8).
        int[] ids = Enumerable.Range(0, 24).Select(i => (i * 13 + 7) % 260).ToArray();
        string input = Path.Combine(work, "ids.safetensors"), output = Path.Combine(work, "logits.safetensors");
        using (var t = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0)) SafeTensorsWriter.Write(input, [("input_ids", t)]);
        var (code, _, err) = CliCapture.Run("logits", "--model", dir, "--input", input, "--output", output);
        Assert.True(code == 0, err);
        using (var f = new SafeTensorsFile(output))
        using (var mine = f.Load("logits"))
        using (var expected = tensor(new ReferenceLlama(dir).Forward(ids)).unsqueeze(0))
            Assert.True(TestPaths.RelativeError(mine, expected) < 1e-5);

        (code, var text, err) = CliCapture.Run("generate", "--model", dir, "--prompt", "code red", "--max-new-tokens", "6");
        Assert.True(code == 0, err);
        Assert.False(string.IsNullOrWhiteSpace(text));

        string data = Path.Combine(work, "train.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"prompt\":\"code {i} ->\",\"completion\":\" n{i}\"}}"));
        string run = Path.Combine(work, "run");
        (code, _, err) = CliCapture.Run("train", "--model", dir, "--data", data, "--method", "qlora", "--steps", "2", "--batch", "2",
            "--max-seq", "24", "--rank", "2", "--out", run);
        Assert.True(code == 0, err);
        string adapter = Path.Combine(run, "final");
        using (var a = new SafeTensorsFile(Path.Combine(adapter, "adapter_model.safetensors")))
        {
            var names = a.Tensors.Select(x => x.Name).ToList();
            // all-linear over the family's own module names: Phi-3's fused projections are what get adapters.
            string attn = family == "phi3" ? "self_attn.qkv_proj" : "self_attn.q_proj";
            Assert.Contains(names, n => n.Contains(attn + ".lora_A"));
        }

        string merged = Path.Combine(work, "merged");
        (code, _, err) = CliCapture.Run("merge", "--model", dir, "--adapter", adapter, "--out", merged);
        Assert.True(code == 0, err);
        using (var m = ModelLoader.Load(merged)) Assert.Equal(family, m.Config.ModelType);
        (code, _, err) = CliCapture.Run("inspect", "--model", merged);
        Assert.True(code == 0, err);

        // quantize to bitsandbytes NF4: inspect accepts the packed layout, and the logits are the float64 reference's
        // on the dequantised weights (what the NF4 folder holds, read back through the family's own names).
        string nf4 = Path.Combine(work, "nf4"), nf4Logits = Path.Combine(work, "nf4-logits.safetensors");
        (code, _, err) = CliCapture.Run("quantize", "--model", dir, "--out", nf4);
        Assert.True(code == 0, err);
        (code, _, err) = CliCapture.Run("inspect", "--model", nf4);
        Assert.True(code == 0, err);
        (code, _, err) = CliCapture.Run("logits", "--model", nf4, "--input", input, "--output", nf4Logits);
        Assert.True(code == 0, err);
        string dequantised = TestPaths.TempDir();
        File.Copy(Path.Combine(dir, "config.json"), Path.Combine(dequantised, "config.json"));
        using (var q = ModelLoader.Load(nf4))
        using (no_grad())
        {
            Assert.Contains(q.Linears(), l => l.Quantized is not null);
            var tensors = q.named_parameters().Select(p => (p.name, p.parameter.detach().clone()))
                .Concat(q.Linears().Where(l => l.Quantized is not null).Select(l => (l.ModulePath + ".weight", l.DenseWeight(ScalarType.Float32).clone())))
                .ToList();
            SafeTensorsWriter.Write(Path.Combine(dequantised, "model.safetensors"), tensors);
        }
        using (var f = new SafeTensorsFile(nf4Logits))
        using (var mine = f.Load("logits"))
        using (var expected = tensor(new ReferenceLlama(dequantised).Forward(ids)).unsqueeze(0))
            Assert.True(TestPaths.RelativeError(mine, expected) < 1e-5);
    }
}
