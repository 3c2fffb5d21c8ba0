using System.Globalization;
using System.ComponentModel;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Training.Preference;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>Every knob of `peft train`. With no arguments: QLoRA on the bundled demo model and task.</summary>
public sealed class TrainSettings : CommandSettings
{
    public static string DemoDir => Path.Combine(RepoRoot.Find(), "assets", "demo");

    [CommandOption("--model <DIR>")] [Description("Base model folder or Hub repo id ORG/NAME (default: the bundled demo model, assets/demo/base)")]
    public string? Model { get; set; }
    [CommandOption("--data <FILE>")] [Description("Training data: .jsonl ({text} | {prompt,completion} | {messages}) or .txt (default: the demo task)")]
    public string? Data { get; set; }
    [CommandOption("--chat-template <FILE>")] [Description(ChatCli.TemplateOptionHelp)]
    public string? ChatTemplate { get; set; }
    [CommandOption("--eval-file <FILE>")] [Description("Evaluation data (default with the demo: assets/demo/eval.jsonl)")]
    public string? EvalFile { get; set; }
    [CommandOption("--heldout <FILE>")] [Description("Plain text to measure forgetting on (perplexity before/after; default with the demo: assets/demo/heldout.txt)")]
    public string? Heldout { get; set; }
    [CommandOption("--method <METHOD>")] [Description("full | lora | dora | qlora | qdora | adapter | prompt; or dpo | orpo (preference tuning of a --adapter-method adapter)")] [DefaultValue("qlora")]
    public string Method { get; set; } = "qlora";
    [CommandOption("--adapter-method <METHOD>")] [Description("With --method dpo|orpo: the adapter trained, lora | dora | qlora | qdora")] [DefaultValue("qlora")]
    public string AdapterMethod { get; set; } = "qlora";
    [CommandOption("--beta <B>")] [Description("dpo: KL strength; orpo: odds-ratio weight")] [DefaultValue(0.1)]
    public double Beta { get; set; } = 0.1;
    [CommandOption("--label-smoothing <E>")] [Description("dpo sigmoid loss: assumed share of flipped labels (cDPO), in [[0, 0.5)")] [DefaultValue(0.0)]
    public double LabelSmoothing { get; set; }
    [CommandOption("--loss-type <T>")] [Description("dpo loss: sigmoid | ipo")] [DefaultValue("sigmoid")]
    public string LossType { get; set; } = "sigmoid";
    [CommandOption("--precompute-ref")] [Description("dpo: reference log-probs once for the dataset before training, not per batch")]
    public bool PrecomputeRef { get; set; }
    [CommandOption("--init-adapter <DIR>")] [Description("dpo/orpo: continue this (SFT) adapter; for dpo a frozen copy of it is the reference (default with the demo: its SFT adapter, trained first when runs/demo-sft has none)")]
    public string? InitAdapter { get; set; }
    [CommandOption("--out <DIR>")] [Description("Output folder (default: runs/<method>-<time>)")]
    public string? Out { get; set; }
    [CommandOption("--overwrite")] [Description("Replace a run already in --out")]
    public bool Overwrite { get; set; }
    [CommandOption("--resume <DIR>")] [Description("Continue a run (its folder or one checkpoint folder)")]
    public string? Resume { get; set; }

    [CommandOption("--rank <R>")] [DefaultValue(8)] public int Rank { get; set; } = 8;
    [CommandOption("--alpha <A>")] [DefaultValue(16.0)] public double Alpha { get; set; } = 16;
    [CommandOption("--dropout <P>")] [DefaultValue(0.0)] public double Dropout { get; set; }
    [CommandOption("--targets <LIST>")] [Description("Comma list of module names/suffixes, all-linear, or regex:PATTERN")] [DefaultValue("all-linear")]
    public string Targets { get; set; } = "all-linear";
    [CommandOption("--exclude <LIST>")] public string? Exclude { get; set; }
    [CommandOption("--rslora")] public bool UseRslora { get; set; }
    [CommandOption("--rank-pattern <SPEC>")] [Description("PEFT's rank_pattern: KEY=RANK,... with regex keys (e.g. \"q_proj=16,.*\\.mlp\\..*=4\")")]
    public string? RankPattern { get; set; }
    [CommandOption("--alpha-pattern <SPEC>")] [Description("PEFT's alpha_pattern: KEY=ALPHA,... with regex keys")]
    public string? AlphaPattern { get; set; }
    [CommandOption("--layers <LIST>")] [Description("PEFT's layers_to_transform: decoder layers that get LoRA, e.g. 0-3,7")]
    public string? Layers { get; set; }
    [CommandOption("--init <INIT>")] [Description("LoRA init (PEFT's init_lora_weights): true | false | gaussian | pissa")] [DefaultValue("true")]
    public string Init { get; set; } = "true";
    [CommandOption("--reduction-factor <N>")] [Description("Houlsby bottleneck = hidden / N")] [DefaultValue(16)]
    public int ReductionFactor { get; set; } = 16;
    [CommandOption("--virtual-tokens <N>")] [DefaultValue(20)] public int VirtualTokens { get; set; } = 20;
    [CommandOption("--prompt-init <INIT>")] [Description("random | sample_vocab | text")] [DefaultValue("sample_vocab")]
    public string PromptInit { get; set; } = "sample_vocab";
    [CommandOption("--prompt-init-text <TEXT>")] public string? PromptInitText { get; set; }
    [CommandOption("--block-size <N>")] [Description("NF4 block size for qlora/qdora")] [DefaultValue(64)] public int BlockSize { get; set; } = 64;

    [CommandOption("--lr <LR>")] [Description("Learning rate (default 1e-3 for adapters, 1e-4 for dpo, 3e-2 for prompt tuning, 2e-4 for full)")]
    public double? LearningRate { get; set; }
    [CommandOption("--schedule <S>")] [Description("constant | linear | cosine")] [DefaultValue("cosine")]
    public string Schedule { get; set; } = "cosine";
    [CommandOption("--warmup <STEPS>")] [DefaultValue(10)] public int Warmup { get; set; } = 10;
    [CommandOption("--epochs <N>")] [DefaultValue(1)] public int Epochs { get; set; } = 1;
    [CommandOption("--steps <N>")] [Description("Optimiser steps (overrides --epochs; default with the demo data: 400; dpo 100)")]
    public int? Steps { get; set; }
    [CommandOption("--batch <N>")] [DefaultValue(16)] public int Batch { get; set; } = 16;
    [CommandOption("--grad-accum <N>")] [DefaultValue(1)] public int GradAccum { get; set; } = 1;
    [CommandOption("--max-seq <N>")] [DefaultValue(256)] public int MaxSeq { get; set; } = 256;
    [CommandOption("--packing")] public bool Packing { get; set; }
    [CommandOption("--checkpointing")] [Description("Gradient checkpointing: recompute layer activations in backward")]
    public bool Checkpointing { get; set; }
    [CommandOption("--optimizer <O>")] [Description("adamw | adamw-8bit | paged-adamw | paged-adamw-8bit")] [DefaultValue("adamw")]
    public string Optimizer { get; set; } = "adamw";
    [CommandOption("--weight-decay <W>")] [DefaultValue(0.0)] public double WeightDecay { get; set; }
    [CommandOption("--seed <S>")] [DefaultValue(42)] public int Seed { get; set; } = 42;
    [CommandOption("--eval-split <F>")] [Description("Fraction of --data held out for eval when no --eval-file")] [DefaultValue(0.0)]
    public double EvalSplit { get; set; }
    [CommandOption("--eval-interval <N>")] [Description("Evaluate every N steps (default: 5 evaluations per run)")]
    public int? EvalInterval { get; set; }
    [CommandOption("--save-interval <N>")] [DefaultValue(0)] public int SaveInterval { get; set; }
    [CommandOption("--device <D>")] [DefaultValue("cpu")] public string Device { get; set; } = "cpu";
    [CommandOption("--report-to <LIST>")] [Description("Also report to: none | tensorboard (event files in OUT/tensorboard; comma list)")] [DefaultValue("none")]
    public string ReportTo { get; set; } = "none";
    [CommandOption("--dashboard")] [Description("Serve a live training page (loss, eval, lr, tokens/s, memory, ETA) on 127.0.0.1 while training")]
    public bool Dashboard { get; set; }
    [CommandOption("--dashboard-port <N>")] [Description("Port of --dashboard (0 = any free one)")] [DefaultValue(8001)]
    public int DashboardPort { get; set; } = 8001;
    [CommandOption("--compute-dtype <D>")] [Description("auto | fp32 | bf16 | fp16: the dtype of the frozen base and the activations (adapters, their gradients, " +
        "the optimiser and the loss stay fp32). auto: bf16 where a 256^3 bf16 matmul beats fp32 on this machine (measured once, cached), else fp32. Default fp32; a resumed run keeps its dtype")]
    public string? ComputeDtype { get; set; }
    [CommandOption("--threads <N>")] [Description("CPU threads for tensor maths (default: one per core)")] public int? Threads { get; set; }
    [CommandOption("--pack-weights <MODE>")] [Description("auto | on | off: CPU fp32 runs keep the frozen weights packed for MKL's GEMM during the steps " +
        "(steps 1.04-1.18x faster in the benches, the more so the fewer tokens a step holds; 2x the frozen weights' bytes, shown in the plan). auto: when the copies fit in an eighth of this machine's memory")] [DefaultValue("auto")]
    public string PackWeights { get; set; } = "auto";

    /// <summary>--pack-weights as the trainer and the planner take it: true, false, or null for auto.</summary>
    internal bool? PackFrozenWeights => CliOptions.PackWeights(PackWeights);

    public bool UsesDemo => Data is null;
    /// <summary>--method dpo or orpo: preference tuning of an --adapter-method adapter.</summary>
    public bool IsPreference => Training.Preference.PreferenceOptions.IsPreferenceMethod(Method);

    internal PreferenceOptions PreferenceOptions() => new()
    {
        Method = Training.Preference.PreferenceOptions.ParseMethod(Method), Beta = Beta, LabelSmoothing = LabelSmoothing,
        LossType = Training.Preference.PreferenceOptions.ParseLossType(LossType), PrecomputeReference = PrecomputeRef,
    };

    public MethodOptions MethodOptions() => new()
    {
        Method = IsPreference ? AdapterMethod : Method, Rank = Rank, Alpha = Alpha, Dropout = Dropout, Targets = Targets, Exclude = Exclude, UseRslora = UseRslora,
        Init = LoraInitNames.Parse(Init) ?? throw new ArgumentException($"--init: '{Init}' is not one of {LoraInitNames.Choices}"), ReductionFactor = ReductionFactor, VirtualTokens = VirtualTokens, PromptInit = PromptInit.ToLowerInvariant() switch
        {
            "random" => PeftSharp.PromptInit.Random,
            "text" => PeftSharp.PromptInit.Text,
            "sample_vocab" or "vocab" => PeftSharp.PromptInit.SampleVocab,
            _ => throw new ArgumentException($"--prompt-init: '{PromptInit}' is not random, sample_vocab or text"),
        },
        PromptInitText = PromptInitText,
        BlockSize = BlockSize,
        RankPattern = PatternFlags.Dict<int>(RankPattern, "--rank-pattern", v => int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int r) ? r : (int?)null),
        AlphaPattern = PatternFlags.Dict<double>(AlphaPattern, "--alpha-pattern", v => double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double a) ? a : (double?)null),
        LayersToTransform = Layers is null ? null : PatternFlags.Layers(Layers, "--layers"),
    };

    /// <summary>
    /// --compute-dtype, else fp32 (also for a resumed run that recorded none: runs before the option were fp32). fp32 stays
    /// the default until bf16's memory plan (now with the 16-bit arena term: -7.4% on the demo, fp32 -7.1%) is checked at a
    /// larger shape and the demo's full 400-step loss in bf16 is compared with fp32's (150 steps: +1.2%); `auto` opts in.
    /// </summary>
    public string RequestedComputeDtype => ComputeDtype ?? "fp32";

    ComputeDtypeChoice? _compute;
    /// <summary>
    /// The run's compute dtype, decided once per run (auto measures, or reads the cached probe, only here): `train` prints it
    /// and records its name; <see cref="TrainerOptions"/> passes that name on, so the library loads the model without
    /// deciding again. Call it after --resume restored the run's options.
    /// </summary>
    internal ComputeDtypeChoice Compute() => _compute ??= Training.ComputeDtype.Resolve(RequestedComputeDtype, Method, Device);

    public string ModelDir => Model ?? Path.Combine(DemoDir, "base");
    string? _outDir;
    /// <summary>The run folder: --out, the --resume run's folder, or runs/METHOD-TIME (the time taken once, at the first call).</summary>
    public string OutDir() => _outDir ??= Out ?? (Resume is { } r ? Checkpoint.RunFolder(r) : Path.Combine("runs", $"{Method}-{DateTime.Now:yyyyMMdd-HHmmss}"));
    public string DataFile => Data ?? Path.Combine(DemoDir, IsPreference ? "preference-train.jsonl" : "train.jsonl");
    public string? EvalPath => EvalFile ?? (UsesDemo && EvalSplit == 0 ? Path.Combine(DemoDir, IsPreference ? "preference-eval.jsonl" : "eval.jsonl") : null);
    public string? HeldoutPath => Heldout ?? (UsesDemo ? Path.Combine(DemoDir, "heldout.txt") : null);

    public TrainerOptions TrainerOptions(string outDir)
    {
        int? steps = Steps ?? (UsesDemo ? (Method == "dpo" ? 100 : 400) : null);
        int evalInterval = EvalInterval ?? (steps is int s ? Math.Max(1, s / 5) : 0);
        return new TrainerOptions
        {
            LearningRate = LearningRate ?? (Method == "full" ? 2e-4 : Method == "prompt" ? 3e-2 : Method == "dpo" ? 1e-4 : 1e-3),
            Schedule = ParseSchedule(Schedule),
            WarmupSteps = Warmup, Epochs = Epochs, MaxSteps = steps, BatchSize = Batch, GradientAccumulation = GradAccum,
            MaxSeqLength = MaxSeq, Packing = Packing, GradientCheckpointing = Checkpointing, Optimizer = Training.Optim.OptimizerFactory.Parse(Optimizer),
            WeightDecay = WeightDecay, Seed = (ulong)Seed, EvalSplit = EvalSplit, EvalFile = EvalPath, EvalInterval = evalInterval,
            SaveInterval = SaveInterval, ResumeFrom = Resume, OutDir = outDir, Overwrite = Overwrite, Device = Device,
            ComputeDtype = Compute().Dtype, PackFrozenWeights = PackFrozenWeights,
        };
    }

    /// <summary><see cref="LrSchedule.Parse"/>, its error naming the option.</summary>
    static LrScheduleKind ParseSchedule(string name)
    {
        try { return LrSchedule.Parse(name); }
        catch (ArgumentException) { throw new ArgumentException($"--schedule: '{name}' is not constant, linear or cosine"); }
    }

    /// <summary>A library error naming a config key ("'r' must be positive") as the flag that sets it ("--rank must be positive").</summary>
    static string AsFlag(string message)
    {
        foreach (var (key, flag) in Training.Methods.MethodOptions.FlagOf)
            if (message.StartsWith($"'{key}'", StringComparison.Ordinal))
                return flag + message[(key.Length + 2)..];
        return message;
    }

    public override ValidationResult Validate()
    {
        if (CliOptions.NonFiniteNumber(this) is { } nonFinite) return ValidationResult.Error(nonFinite);
        try
        {
            try { MethodOptions().Validate(); }
            catch (ArgumentException e) { return ValidationResult.Error(AsFlag(e.Message)); }
            if (IsPreference) PreferenceOptions().Validate();
        }
        catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
        if (IsPreference && !Training.Methods.MethodOptions.IsLoraMethod(AdapterMethod))
            return ValidationResult.Error($"--adapter-method: '{AdapterMethod}' is not lora, dora, qlora or qdora (--method {Method} trains a LoRA-family adapter)");
        if (InitAdapter is not null && !IsPreference) return ValidationResult.Error("--init-adapter applies to --method dpo or orpo");
        if (InitAdapter is not null && !Directory.Exists(InitAdapter)) return ValidationResult.Error($"--init-adapter: folder '{InitAdapter}' not found");
        try { Training.Optim.OptimizerFactory.Parse(Optimizer); }
        catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
        try { Training.Reporting.RunReporters.Parse(ReportTo); }
        catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
        if (DashboardPort is < 0 or > 65535) return ValidationResult.Error($"--dashboard-port must be in 0..65535 (got {DashboardPort})");
        try
        {
            Training.ComputeDtype.Parse(RequestedComputeDtype);
            Training.ComputeDtype.Check(RequestedComputeDtype, Method);
        }
        catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
        if (Threads is <= 0) return ValidationResult.Error($"--threads must be positive (got {Threads})");
        if (CliOptions.OutFolderIsAFile(Out) is { } outIsFile) return outIsFile;
        try { _ = PackFrozenWeights; }
        catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
        if (Batch <= 0) return ValidationResult.Error($"--batch must be positive (got {Batch})");
        if (GradAccum <= 0) return ValidationResult.Error($"--grad-accum must be positive (got {GradAccum})");
        if (MaxSeq <= 1) return ValidationResult.Error($"--max-seq must be at least 2 (got {MaxSeq})");
        if (Steps is <= 0) return ValidationResult.Error($"--steps must be positive (got {Steps})");
        if (Epochs <= 0) return ValidationResult.Error($"--epochs must be positive (got {Epochs})");
        if (Warmup < 0) return ValidationResult.Error($"--warmup must be 0 or more steps (got {Warmup})");
        if (SaveInterval < 0) return ValidationResult.Error($"--save-interval must be 0 (no periodic checkpoints) or a positive step count (got {SaveInterval})");
        if (EvalInterval is <= 0) return ValidationResult.Error($"--eval-interval must be a positive step count (got {EvalInterval})");
        if (WeightDecay < 0) return ValidationResult.Error($"--weight-decay must be 0 or more (got {WeightDecay})");
        if (EvalSplit is < 0 or >= 1) return ValidationResult.Error($"--eval-split must be in [0, 1) (got {EvalSplit})");
        if (Device is not ("cpu" or "cuda") && !Device.StartsWith("cuda:")) return ValidationResult.Error($"--device: '{Device}' is not cpu or cuda");
        if (LearningRate is <= 0) return ValidationResult.Error($"--lr must be positive (got {LearningRate})");
        if (Data is not null && !File.Exists(Data)) return ValidationResult.Error($"--data: file '{Data}' not found");
        if (EvalFile is not null && !File.Exists(EvalFile)) return ValidationResult.Error($"--eval-file: file '{EvalFile}' not found");
        if (Heldout is not null && !File.Exists(Heldout)) return ValidationResult.Error($"--heldout: file '{Heldout}' not found");
        if (Overwrite && Resume is not null) return ValidationResult.Error("--overwrite and --resume exclude each other");
        if (Model is null) return ValidationResult.Success();
        var resolved = HubCli.TryResolve(Model, "--model", out var folder);
        Model = folder;
        return resolved;
    }
}

/// <summary>Finds the repository root (where the demo assets live), from the working directory or the binary.</summary>
public static class RepoRoot
{
    public static string Find()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (Directory.Exists(Path.Combine(d.FullName, "assets", "demo"))) return d.FullName;
        throw new DirectoryNotFoundException("the bundled demo assets (assets/demo) were not found; pass --model and --data");
    }
}
