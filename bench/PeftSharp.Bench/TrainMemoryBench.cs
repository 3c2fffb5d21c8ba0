using System.Text.Json;
using PeftSharp.Cli.Reports;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// One training run of the project's own Trainer (MethodFactory, fp32 AdamW, the optimiser factory of `peft train`)
/// on random token ids, and the plan `peft train` prints for it (RunPlan.For) beside the measured peak resident set.
/// Run it once per process: VmHWM is the peak of the whole process. bench/plan-vs-measured.sh drives it.
/// The model folder needs config.json, model.safetensors and tokenizer.json (full fine-tuning saves a copy).
/// </summary>
public sealed class TrainMemoryBench : IBench
{
    public string Name => "train-memory";
    public string Description => "one Trainer run, plan vs measured peak RSS (--model DIR --method full|lora|qlora --seq --batch --steps --checkpointing --padded --varied --threads N --eval-batch B --compute-dtype fp32|bf16)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string allocator = BenchAllocator.Apply(a); // as peft train does (--allocator glibc: glibc's default heap)
        if (a.Int("threads", 0) is > 0 and int threads) set_num_threads(threads);
        using (zeros(1)) { } // libtorch loaded: what is resident now is the runtime, as peft train counts it
        var probes = new Dictionary<string, RuntimeProbe.Sample> { ["libtorch_loaded"] = RuntimeProbe.Take() };
        long runtime = probes["libtorch_loaded"].Rss;
        string modelDir = a.Get("model", "");
        if (modelDir == "") throw new ArgumentException("--model is required");
        string method = a.Get("method", "lora");
        int seq = a.Int("seq", 128), batch = a.Int("batch", 1), steps = a.Int("steps", 3);
        bool checkpointing = a.Flag("checkpointing");
        string outDir = a.Get("out", Path.Combine(Path.GetTempPath(), "peftsharp-train-memory-" + Guid.NewGuid().ToString("N")));

        var m = new MethodOptions { Method = method, Rank = a.Int("rank", 8), Targets = a.Get("targets", "all-linear") };
        var o = new TrainerOptions
        {
            BatchSize = batch, MaxSteps = steps, MaxSeqLength = seq, GradientCheckpointing = checkpointing,
            OutDir = outDir, Overwrite = true, SaveInterval = 0, Seed = 1,
            ComputeDtype = ComputeDtype.Parse(a.Get("compute-dtype", "fp32"), "--compute-dtype") ?? ScalarType.Float32,
        };
        var config = ModelConfig.Load(modelDir);
        using var tokenizer = TextTokenizer.FromFolder(modelDir, config);
        // --padded: the last row of every batch is one token shorter, so batches carry an explicit attention mask.
        // --varied: rows of seq/2 to seq tokens (the first one seq, so the plan is of the same longest row), as real data:
        // each step's batch pads to its own longest row, so its tensors' sizes change from step to step and the buffer
        // cache holds blocks of many sizes (its slack is what the plan counts for that).
        var rng = new Random(7);
        bool varied = a.Flag("varied");
        var rows = Enumerable.Range(0, batch * (steps + 1)).Select(i =>
        {
            int len = varied ? (i == 0 ? seq : rng.Next(seq / 2, seq + 1))
                : a.Flag("padded") && i % batch == batch - 1 ? seq - 1 : seq;
            var ids = Enumerable.Range(0, len).Select(_ => rng.Next(config.VocabSize)).ToArray();
            return new TokenSequence(ids, ids);
        }).ToList();
        var data = new TrainingData(rows, new DataStats(rows.Count, rows.Count, rows.Sum(r => (long)r.Length), rows.Sum(r => (long)r.Length), 0, 0, 0), [], [], null);

        // As peft train plans these rows (no eval data here): with this process's runtime after load.
        var plan = RunPlan.For(modelDir, m, o, rows, evaluates: false, runtimeAfterLoadBytes: runtime);
        var (model, trainingMethod) = MethodFactory.Create(modelDir, m, tokenizer, CPU, o.ComputeDtype, seed: 1);
        using var _ = model;
        long loadPeak = ProcessMemory.Read().PeakRssBytes;
        probes["model_loaded"] = RuntimeProbe.Take();
        if (checkpointing) PeftSharp.Quantization.GradientCheckpointing.Enable(model);
        long trainingPeak = 0;
        var trainer = new Trainer(model, trainingMethod, o, tokenizer.EosId)
        {
            OnStep = step =>
            {
                trainingPeak = ProcessMemory.Read().PeakRssBytes;
                if (step == 1) probes["first_step"] = RuntimeProbe.Take();
                if (step == steps) probes["last_step"] = RuntimeProbe.Take();
                else if (step % 20 == 0) probes[$"step_{step}"] = RuntimeProbe.Take();
            },
        };
        var clock = System.Diagnostics.Stopwatch.StartNew();
        trainer.Train(data);
        long endPeak = ProcessMemory.Read().PeakRssBytes;
        probes["saved"] = RuntimeProbe.Take();
        // --eval-batch B: one no-grad evaluation pass over the rows at that batch after the run, as peft train's end-of-run
        // eval and held-out perplexity do (their peak is the last figure).
        if (a.Int("eval-batch", 0) is > 0 and int evalBatch)
        {
            Evaluator.Run(model, rows, [], tokenizer.EosId, evalBatch, method: trainingMethod);
            probes["evaluated"] = RuntimeProbe.Take();
        }
        string optimizerFile = Path.Combine(Checkpoint.Resolve(outDir), Checkpoint.Optimizer);
        var measured = MeasuredMemory.From(model, trainingMethod, runtime, endPeak, optimizerFile);
        if (!a.Flag("keep")) Directory.Delete(outDir, recursive: true);

        Console.WriteLine(JsonSerializer.Serialize(new
        {
            method, compute_dtype = o.ComputeDtype, seq, batch, steps, checkpointing, padded = a.Flag("padded"), varied, threads = get_num_threads(),
            seconds = Math.Round(clock.Elapsed.TotalSeconds, 1), allocator,
            predicted = new
            {
                total = plan.TotalBytes, weights = plan.WeightsBytes, gradients = plan.GradientsBytes, optimizer = plan.OptimizerBytes,
                activations = plan.ActivationsBytes, logits = plan.LogitsBytes, dequant = plan.DequantBufferBytes, runtime = plan.FrameworkOverheadBytes,
            },
            measured = new
            {
                peak = endPeak, training_peak = trainingPeak, load_peak = loadPeak, weights = measured.Weights, gradients = measured.Gradients,
                optimizer = measured.Optimizer, runtime, activations_and_buffers = measured.ActivationsAndBuffers,
            },
            probes,
        }));
        return 0;
    }
}
