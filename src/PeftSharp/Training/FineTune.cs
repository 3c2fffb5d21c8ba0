using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PeftSharp.Chat;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Training.Methods;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>What <see cref="FineTune.Run"/> trains: a base folder, data, a method and the trainer's options.</summary>
public sealed record FineTuneOptions
{
    /// <summary>The base model folder (config.json, safetensors, tokenizer.json).</summary>
    public required string Model { get; init; }
    /// <summary>The training data file (JSONL text/prompt-completion/chat, or plain text); ignored when <see cref="Data"/> is given.</summary>
    public string? DataFile { get; init; }
    /// <summary>Data already tokenised with the model's tokenizer (the CLI loads it first, to plan the run's memory).</summary>
    internal TrainingData? Data { get; init; }
    /// <summary>The tuning method and its knobs (rank, alpha, targets, ...); default QLoRA r=8.</summary>
    public MethodOptions Method { get; init; } = new();
    /// <summary>The training loop's options (learning rate, steps, batch, output folder, ...).</summary>
    public TrainerOptions Trainer { get; init; } = new();
    /// <summary>Seed of the adapter's initialisation (the trainer's data order uses <see cref="TrainerOptions.Seed"/>).</summary>
    public int Seed { get; init; }
    /// <summary>Where the model trains; null = CPU.</summary>
    public Device? Device { get; init; }
    /// <summary>A chat template used instead of the model's own for chat data; null = the model's.</summary>
    public string? ChatTemplateFile { get; init; }
    /// <summary>How chat data was rendered when <see cref="Data"/> is given (recorded in the adapter folder).</summary>
    internal ChatPrompter? Chat { get; init; }
    /// <summary>Held-out texts whose loss is measured before and after training (forgetting); null = none.</summary>
    public string? HeldoutFile { get; init; }
    /// <summary>Where the run's notes go (method, steps, resume); default: nowhere.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>One logged training step (or evaluation) of a run.</summary>
/// <param name="Step">The optimiser step (1-based) the record belongs to.</param>
/// <param name="TotalSteps">The run's steps when <see cref="TrainerOptions.MaxSteps"/> sets them; null when epochs do.</param>
/// <param name="Loss">The step's training loss, or the evaluation's loss; null for a record without one.</param>
/// <param name="Record">The whole record as metrics.jsonl holds it (lr, grad_norm, tokens_per_s, eval_loss, ...).</param>
public sealed record TrainingProgress(int Step, int? TotalSteps, double? Loss, JsonObject Record);

/// <summary>
/// A finished (or cancelled) run: the trainer's result (FinalDir null when cancelled before the end), the method's
/// description, parameter counts and bytes (what measured memory needs) and held-out losses before/after.
/// </summary>
/// <param name="Train">The training loop's result (steps, losses, evaluations, the final folder).</param>
/// <param name="MethodDescription">The method and its trainable share as one line, e.g. "LoRA r=8 alpha=16 on 16 modules: 0.066M trainable of 3.21M (2.04%)".</param>
/// <param name="TrainableParameters">Parameters that trained.</param>
/// <param name="TotalParameters">Parameters of the model, base and adapters.</param>
/// <param name="WeightBytes">Bytes of every weight the run held (quantised storage and adapters included).</param>
/// <param name="TrainableBytes">Bytes of the trainable parameters (as many again for their gradients).</param>
/// <param name="HeldoutLossBefore">Loss on <see cref="FineTuneOptions.HeldoutFile"/> before training; null without one.</param>
/// <param name="HeldoutLossAfter">Loss on the held-out texts after training; null without them or when cancelled.</param>
public sealed record FineTuneResult(TrainResult Train, string MethodDescription, long TrainableParameters, long TotalParameters,
    long WeightBytes, long TrainableBytes, double? HeldoutLossBefore, double? HeldoutLossAfter)
{
    /// <summary>The tokenised data the run trained on (the CLI reports its statistics).</summary>
    internal TrainingData Data { get; init; } = null!;
}

/// <summary>Training as a library call: the same run `peft train` makes, without the console (progress through <see cref="IProgress{T}"/>).</summary>
public static class FineTune
{
    /// <summary>
    /// Loads the base, tokenises the data, attaches the method, trains, and saves the result under
    /// <see cref="TrainerOptions.OutDir"/>/final (an adapter folder PEFT loads, or a full model). <paramref name="progress"/>
    /// gets every logged step and evaluation; cancelling stops after the current step with a checkpoint that
    /// <see cref="TrainerOptions.ResumeFrom"/> continues (then <see cref="TrainResult.FinalDir"/> is null).
    /// Bad options throw <see cref="ArgumentException"/> naming the config key ('r', 'lora_alpha', ...); unreadable model or
    /// data files throw <see cref="InvalidDataException"/> naming the file; a loss that turns NaN or infinite throws
    /// <see cref="TrainingDivergedException"/>.
    /// </summary>
    public static FineTuneResult Run(FineTuneOptions options, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options.Method.Validate();
        var config = ModelConfig.Load(options.Model);
        using var tokenizer = TextTokenizer.FromFolder(options.Model, config);
        var chat = options.Chat ?? ChatPrompter.ForModel(options.Model, options.ChatTemplateFile);
        var trainer = options.Trainer;
        var data = options.Data ?? TrainingData.Load(options.DataFile ?? throw new ArgumentException("'data_file' is required (or pass loaded data)"),
            tokenizer, trainer, chat);
        // The trainer options hold the compute dtype ('auto' is resolved by the caller, which records it).
        var (model, method) = MethodFactory.Create(options.Model, options.Method, tokenizer, options.Device ?? CPU, options.Trainer.ComputeDtype, options.Seed);
        using var _ = model;
        if (trainer.GradientCheckpointing) GradientCheckpointing.Enable(model);
        options.Logger.LogInformation("method {Description}", method.Description);

        var heldout = options.HeldoutFile is { } hp ? TrainingData.Load(hp, tokenizer, trainer.MaxSeqLength, packing: false).Train.Take(64).ToList() : null;
        double? before = heldout is null ? null : Evaluator.Run(model, heldout, [], tokenizer.EosId, trainer.BatchSize).Loss;
        int? total = trainer.MaxSteps;
        var result = new Trainer(model, method, trainer, tokenizer.EosId)
        {
            Log = m => options.Logger.LogInformation("{Message}", m),
            Decode = tokenizer.Decode,
            Cancellation = cancellationToken,
            OnRecord = r => progress?.Report(new TrainingProgress(r["step"]?.GetValue<int>() ?? 0, total, r["loss"]?.GetValue<double>(), r)),
        }.Train(data);
        if (result.FinalDir is not null && chat.Used)
        {
            // A fully fine-tuned model is a model folder, read by tools that know nothing of PeftSharp's adapter record:
            // the template it was trained with goes where transformers reads it (as merge does for a merged adapter),
            // in place of the base's copied with its files. An adapter records it in its sidecar instead.
            if (method is FullFineTuning)
            {
                if (chat.Template is { } trained && trained.Sha256 != BaseTemplateSha256(options.Model))
                    MergedChatTemplate.WriteInto(result.FinalDir, trained.Text);
            }
            else AdapterChatRecord.Of(chat, tokenizer.StopIds(config).Concat(chat.EndOfTurnIds(tokenizer))).Write(result.FinalDir);
        }
        double? after = heldout is null || result.FinalDir is null ? null : Evaluator.Run(model, heldout, [], tokenizer.EosId, trainer.BatchSize, method: method).Loss;

        var (weights, trainableBytes) = MemoryBytes(model, method);
        return new FineTuneResult(result, method.Description, method.TrainableParameters.Sum(p => p.P.numel()), model.ParameterCount(),
            weights, trainableBytes, before, after) { Data = data };
    }

    static string? BaseTemplateSha256(string modelDir)
    {
        try { return ChatTemplate.Load(modelDir)?.Sha256; }
        catch (InvalidDataException) { return null; }   // a base template that cannot be used is not the one trained with
    }

    /// <summary>Bytes of the weights a run holds (quantised storage and adapters included) and of its trainable parameters (= their gradients).</summary>
    internal static (long Weights, long Trainable) MemoryBytes(CausalLM model, ITrainingMethod method)
    {
        var trainable = method.TrainableParameters.Select(p => p.P).ToList();
        // Adapter parameters are not registered with the model: they count as weights too.
        var registered = model.parameters().Select(p => p.Handle).ToHashSet();
        long weights = model.parameters().Sum(p => p.numel() * p.element_size())
                       + model.Linears().Where(l => l.Quantized is not null).Sum(l => l.Quantized!.StorageBytes)
                       + trainable.Where(p => !registered.Contains(p.Handle)).Sum(p => p.numel() * p.element_size());
        return (weights, trainable.Sum(p => p.numel() * p.element_size()));
    }
}
