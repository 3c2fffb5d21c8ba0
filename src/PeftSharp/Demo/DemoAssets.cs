using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Demo;

/// <summary>
/// The bundled demo: generated data (pretrain.txt, heldout.txt, train.jsonl, eval.jsonl), a word-level tokenizer,
/// and a Llama-shaped base model (base/) pretrained on pretrain.txt with PeftSharp's own full fine-tuning.
/// Everything is deterministic from fixed seeds; see assets/demo/README.md.
/// </summary>
public static class DemoAssets
{
    public const ulong WorldSeed = 1, PretrainSeed = 11, HeldoutSeed = 12, TaskSeed = 7, SplitSeed = 13;
    public const int PretrainDocuments = 4000, HeldoutDocuments = 200, EvalExamples = 64;
    public const string BaseFolder = "base";

    /// <summary>hidden 256, 4 layers, 4 heads, intermediate 688: about 3.2M parameters.</summary>
    public static JsonObject ModelConfigJson(int vocabSize) => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama",
        ["hidden_size"] = 256, ["intermediate_size"] = 688, ["num_hidden_layers"] = 4,
        ["num_attention_heads"] = 4, ["num_key_value_heads"] = 4, ["vocab_size"] = vocabSize,
        ["max_position_embeddings"] = 128, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0,
        ["tie_word_embeddings"] = false, ["hidden_act"] = "silu", ["attention_bias"] = false,
        ["torch_dtype"] = "bfloat16", ["bos_token_id"] = null, ["eos_token_id"] = 0,
    };

    /// <summary>Writes the data files, base/tokenizer.json and base/config.json (no weights) into <paramref name="outDir"/>.</summary>
    public static void WriteData(string outDir)
    {
        Directory.CreateDirectory(outDir);
        var corpus = new SyntheticCorpus(WorldSeed);
        AtomicFile.WriteAllText(Path.Combine(outDir, "pretrain.txt"), string.Join("\n\n", corpus.Documents(PretrainDocuments, PretrainSeed)) + "\n");
        AtomicFile.WriteAllText(Path.Combine(outDir, "heldout.txt"), string.Join("\n\n", corpus.Documents(HeldoutDocuments, HeldoutSeed)) + "\n");
        var (train, eval) = new CodeTask(TaskSeed).Split(EvalExamples, SplitSeed);
        AtomicFile.WriteAllText(Path.Combine(outDir, "train.jsonl"), Jsonl(train));
        AtomicFile.WriteAllText(Path.Combine(outDir, "eval.jsonl"), Jsonl(eval));

        string baseDir = Path.Combine(outDir, BaseFolder);
        Directory.CreateDirectory(baseDir);
        var words = DemoVocabulary.All.ToList();
        AtomicFile.WriteAllText(Path.Combine(baseDir, "tokenizer.json"), WordLevelTokenizerJson.Build(words));
        int vocab = (words.Distinct().Count() + 2 + 7) / 8 * 8; // rounded up to a multiple of 8
        AtomicFile.WriteAllText(Path.Combine(baseDir, "config.json"), ModelConfigJson(vocab).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    static readonly JsonSerializerOptions Compact = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static string Jsonl(IEnumerable<(string Prompt, string Completion)> rows) =>
        string.Concat(rows.Select(r => new JsonObject { ["prompt"] = r.Prompt, ["completion"] = r.Completion }.ToJsonString(Compact) + "\n"));

    /// <summary>Options of the pretraining run: full fine-tuning from random weights, packed 64-token sequences.</summary>
    public static TrainerOptions PretrainOptions(string runDir, int steps) => new()
    {
        LearningRate = 2e-3, Schedule = LrScheduleKind.Cosine, WarmupSteps = Math.Min(50, steps / 10), MaxSteps = steps,
        BatchSize = 8, MaxSeqLength = 128, Packing = true, Seed = PretrainSeed, WeightDecay = 0.01, MaxGradNorm = 1.0,
        SaveInterval = 0, OutDir = runDir, Overwrite = true,
    };

    /// <summary>
    /// Pretrains the base model from seeded random weights on pretrain.txt (evaluating on heldout.txt) and writes
    /// base/model.safetensors in bf16. Returns the trainer's result (loss, eval loss, time).
    /// </summary>
    public static TrainResult Pretrain(string outDir, int steps, Action<string>? log = null, Action<JsonObject>? onRecord = null)
    {
        string baseDir = Path.Combine(outDir, BaseFolder);
        var tokenizer = TextTokenizer.Load(baseDir);
        var config = ModelConfig.Load(baseDir);
        random.manual_seed((long)PretrainSeed);
        using var model = new CausalLM(config);
        InitializeWeights(model);
        string runDir = Path.Combine(Path.GetTempPath(), $"peftsharp-pretrain-{Guid.NewGuid():N}");
        try
        {
            var opts = PretrainOptions(runDir, steps);
            var data = TrainingData.Load(Path.Combine(outDir, "pretrain.txt"), tokenizer, opts.MaxSeqLength, opts.Packing,
                evalPath: Path.Combine(outDir, "heldout.txt"));
            var method = new FullFineTuning(model, tokenizer.Path, ScalarType.BFloat16);
            var trainer = new Trainer(model, method, opts, tokenizer.EosId) { Log = log, OnRecord = onRecord };
            var result = trainer.Train(data);
            AtomicFile.Write(Path.Combine(baseDir, "model.safetensors"), fs =>
            {
                using var src = File.OpenRead(Path.Combine(result.FinalDir!, "model.safetensors"));
                src.CopyTo(fs);
            });
            File.Copy(Path.Combine(runDir, MetricsLog.FileName), Path.Combine(baseDir, "pretrain_metrics.jsonl"), overwrite: true);
            return result;
        }
        finally
        {
            if (Directory.Exists(runDir)) Directory.Delete(runDir, true);
        }
    }

    /// <summary>GPT-2/Llama-style initialisation: N(0, 0.02) for matrices and embeddings, ones for RMSNorm weights.</summary>
    public static void InitializeWeights(CausalLM model)
    {
        using var noGrad = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) p.fill_(1.0);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
            else p.normal_(0, 0.02);
        }
    }
}
