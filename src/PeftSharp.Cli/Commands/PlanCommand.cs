using System.ComponentModel;
using System.Text.Json;
using PeftSharp.Memory;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>`peft plan`: memory of a training run (or a server) from a preset, config.json or an adapter folder (its base, PlanAdapter). Pure arithmetic, no TorchSharp.</summary>
public sealed class PlanCommand : Command<PlanCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <MODEL>"), Description("Preset name, path to config.json / a model folder, Hub repo id ORG/NAME[[@REVISION]] (config.json alone is downloaded), or an adapter folder (its base, from base_model_name_or_path, with its method, rank and targets unless flags say otherwise)")]
        public string Model { get; set; } = "";

        [CommandOption("--method <METHOD>"), Description("full, lora, dora, qlora, qdora, adapter, prompt-tuning (default: lora, or the adapter's)")]
        public string? Method { get; init; }

        [CommandOption("--rank <R>"), Description("LoRA/DoRA rank (default: 8, or the adapter's)")]
        public int? Rank { get; init; }

        [CommandOption("--alpha <A>"), Description("LoRA alpha (scale only; no memory effect)")]
        public double Alpha { get; init; } = 16;

        [CommandOption("--targets <LIST>"), Description("Comma list (exact or .suffix), all-linear, or regex:PATTERN (full match); default: PEFT's for the model type")]
        public string? Targets { get; init; }

        [CommandOption("--exclude <LIST>"), Description("Comma list of modules never adapted")]
        public string? Exclude { get; init; }

        [CommandOption("--layers <LIST>"), Description("layers_to_transform, e.g. 0,1,2")]
        public string? Layers { get; init; }

        [CommandOption("--lora-dropout <P>"), Description("LoRA dropout (above 0 each LoRA module also keeps a 1-byte mask)")]
        public double? LoraDropout { get; init; }

        [CommandOption("--bottleneck <M>"), Description("Houlsby adapter bottleneck width")]
        public int? Bottleneck { get; init; }

        [CommandOption("--virtual-tokens <N>"), Description("Prompt-tuning virtual tokens")]
        public int? VirtualTokens { get; init; }

        [CommandOption("--batch <B>"), Description("Micro-batch size per GPU")]
        public int Batch { get; init; } = 1;

        [CommandOption("--seq <T>"), Description("Sequence length")]
        public int Seq { get; init; } = 512;

        [CommandOption("--grad-accum <N>"), Description("Gradient accumulation steps (no memory effect)")]
        public int GradAccum { get; init; } = 1;

        [CommandOption("--dtype <D>"), Description("Base weight dtype: fp32, bf16, fp16, nf4 (default: bf16; fp32 with --device cpu, " +
            "where peft train and serve load the base in fp32 unless told otherwise)")]
        public string? Dtype { get; init; }

        /// <summary>--dtype, else what the planned command loads: on a CPU `peft train` (default compute dtype fp32, the base
        /// loaded in it) and `peft serve` (--dtype fp32) hold fp32 weights, so a bf16 default halved the plan of their run
        /// (llama-2-7b LoRA on CPU: 16.9 GB planned for a 33.7 GB run).</summary>
        DType WeightDtype() => Dtypes.Parse(Dtype ?? (PlanNames.Device(Device) == DeviceKind.Cpu ? "fp32" : "bf16"), "dtype");

        [CommandOption("--adapter-dtype <D>"), Description("Adapter dtype: fp32, bf16, fp16")]
        public string AdapterDtype { get; init; } = "fp32";

        [CommandOption("--compute-dtype <D>"), Description("Activation dtype: fp32, bf16, fp16 (default: fp32 for fp32 weights, else bf16; " +
            "peft train's auto is measured on the machine that trains: plan the dtype it picks)")]
        public string? ComputeDtype { get; init; }

        /// <summary>--compute-dtype parsed; "auto" (a train value) is one line saying why plan has no such value.</summary>
        DType? ComputeDtypeOrNull() => ComputeDtype?.Trim().ToLowerInvariant() == "auto"
            ? throw new PlanException("compute_dtype", "'auto' is peft train's choice, measured on the machine that trains " +
                "(its 'compute' line says which it picked): plan with fp32 or bf16")
            : ComputeDtype is null ? null : Dtypes.Parse(ComputeDtype, "compute_dtype");

        [CommandOption("--pure-16bit"), Description("No fp32 master weights for 16-bit trainable parameters")]
        public bool Pure16Bit { get; init; }

        [CommandOption("--optimizer <O>"), Description("adamw, adamw-8bit, paged-adamw, paged-adamw-8bit, sgd, sgd-momentum")]
        public string Optimizer { get; init; } = "adamw";

        [CommandOption("--checkpointing"), Description("Gradient checkpointing")]
        public bool Checkpointing { get; init; }

        [CommandOption("--attention <KIND>"), Description("eager (stores s^2 scores), sdpa (k/v repeated to every head under a padding mask) or flash (grouped k/v)")]
        public string Attention { get; init; } = "fused";

        [CommandOption("--loss <KIND>"), Description("full (HF: fp32 upcast of all logits), chunked (torchtune, 8 chunks) or fused (Liger / Cut Cross Entropy / unsloth)")]
        public string Loss { get; init; } = "full";

        [CommandOption("--memory <VIEW>"), Description("Figure to predict on CUDA: allocated (max_memory_allocated), reserved (max_memory_reserved) or device (nvidia-smi; what must fit)")]
        public string Memory { get; init; } = "device";

        [CommandOption("--compile"), Description("torch.compile: fused RMSNorm and SiLU*up keep fewer intermediates")]
        public bool Compile { get; init; }

        [CommandOption("--offload-activations"), Description("Saved activations in host memory (unsloth's offloaded checkpointing with --checkpointing, torch save_on_cpu without)")]
        public bool OffloadActivations { get; init; }

        [CommandOption("--compare-loss"), Description("The same run under each loss implementation, and the share of the peak the loss decides")]
        public bool CompareLoss { get; init; }

        [CommandOption("--serve"), Description("Plan serving instead of training: weights, KV cache, resident adapters, one prefill chunk, sequences that fit per GPU")]
        public bool Serve { get; init; }

        [CommandOption("--max-batch <B>"), Description("--serve: sequences decoded together")]
        public int MaxBatch { get; init; } = 32;

        [CommandOption("--context <T>"), Description("--serve: tokens per sequence (prompt + generated)")]
        public int Context { get; init; } = 2048;

        [CommandOption("--adapters <N>"), Description("--serve: resident LoRA adapters")]
        public int Adapters { get; init; } = 1;

        [CommandOption("--max-rank <R>"), Description("--serve: largest adapter rank (every adapter counted at it; default: 16, or the adapter's rank)")]
        public int? MaxRank { get; init; }

        [CommandOption("--kv-dtype <D>"), Description("--serve: KV cache dtype (default: the compute dtype)")]
        public string? KvDtype { get; init; }

        [CommandOption("--prefill-chunk <T>"), Description("--serve: prompt tokens of one sequence prefilled at once (default: a whole context, as peft serve)")]
        public int? PrefillChunk { get; init; }

        [CommandOption("--max-prefill-tokens <T>"), Description("--serve: most tokens one batched prefill forward holds (as `peft serve --max-prefill-tokens`, same default)")]
        public int MaxPrefillTokens { get; init; } = ServeRequest.DefaultMaxPrefillTokens;

        [CommandOption("--gpus <N>"), Description("Number of GPUs")]
        public int Gpus { get; init; } = 1;

        [CommandOption("--sharding <S>"), Description("none, zero1, zero2, zero3, fsdp")]
        public string Sharding { get; init; } = "none";

        [CommandOption("--offload"), Description("Offload optimiser state (and ZeRO-3/FSDP weights) to CPU")]
        public bool Offload { get; init; }

        [CommandOption("--device <D>"), Description("cuda or cpu (sets the default framework overhead)")]
        public string Device { get; init; } = "cuda";

        [CommandOption("--pack-weights <MODE>"), Description("auto, on or off: --device cpu with fp32 compute: the frozen weights packed for MKL as `peft train --pack-weights` (2x their bytes; auto: when that fits in 1/8 of this machine's memory)")]
        public string PackWeights { get; init; } = "auto";

        [CommandOption("--overhead-gb <GB>"), Description("Override the per-device framework overhead")]
        public double? OverheadGb { get; init; }

        [CommandOption("--compare"), Description("Every method side by side")]
        public bool Compare { get; init; }

        [CommandOption("--json"), Description("Machine-readable output")]
        public bool Json { get; init; }

        /// <summary>The adapter --model named (an adapter folder), whose settings fill the flags not given.</summary>
        internal PlanAdapter? Adapter { get; private set; }

        public override ValidationResult Validate()
        {
            if (CliOptions.NonFiniteNumber(this) is { } nonFinite) return ValidationResult.Error(nonFinite);
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required (a preset or config.json)");
            try
            {
                if (PlanAdapter.IsAdapterFolder(Model))
                {
                    Adapter = PlanAdapter.Read(Model);
                    Model = Adapter.BaseConfig;
                }
                if (Serve) ToServeRequest().Validate();
                else ToRequest().Validate();
                // Last, so a bad flag is reported before anything is downloaded; a preset name wins over a repo id.
                if (Adapter is null && !Presets.Names.Contains(Model, StringComparer.OrdinalIgnoreCase) && PeftSharp.IO.Gguf.GgufModelSource.IsGguf(Model))
                {
                    // A GGUF base: the folder `generate`/`train` make from its metadata holds the config.json to plan.
                    var gguf = HubCli.TryResolve(Model, "--model", out var prepared);
                    if (!gguf.Successful) return gguf;
                    Model = prepared;
                }
                if (Adapter is null && !Presets.Names.Contains(Model, StringComparer.OrdinalIgnoreCase))
                {
                    var resolved = HubCli.TryResolveConfig(Model, "--model", out var folder);
                    if (!resolved.Successful) return resolved;
                    Model = folder;
                }
                Presets.Resolve(Model);
                return ValidationResult.Success();
            }
            catch (PlanException e)
            {
                return ValidationResult.Error(e.Message);
            }
            catch (ArgumentException e)   // --pack-weights
            {
                return ValidationResult.Error(e.Message);
            }
        }

        public PlanRequest ToRequest() => new()
        {
            Method = PlanNames.Method(Method ?? Adapter?.Method ?? "lora"),
            Rank = Rank ?? Adapter?.Rank ?? 8,
            Alpha = Alpha,
            Targets = Targets is null && Exclude is null && Layers is null ? Adapter?.Targets : TargetMatcher.Parse(Targets ?? "q_proj,v_proj", new TargetFilters
            {
                ExcludeModules = Exclude?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                LayersToTransform = Layers is null ? null : ParseLayers(Layers),
            }),
            LoraDropout = LoraDropout ?? Adapter?.LoraDropout ?? 0,
            AdapterBottleneck = Bottleneck ?? Adapter?.Bottleneck ?? 64,
            VirtualTokens = VirtualTokens ?? Adapter?.VirtualTokens ?? 20,
            WeightDtype = WeightDtype(),
            AdapterDtype = Dtypes.Parse(AdapterDtype, "adapter_dtype"),
            ComputeDtype = ComputeDtypeOrNull(),
            MasterWeights = !Pure16Bit,
            Optimizer = PlanNames.Optimizer(Optimizer),
            BatchSize = Batch,
            SequenceLength = Seq,
            GradientAccumulation = GradAccum,
            GradientCheckpointing = Checkpointing,
            Attention = PlanNames.Attention(Attention),
            Loss = PlanNames.Loss(Loss),
            Memory = PlanNames.MemoryKind(Memory),
            Compile = Compile,
            OffloadActivations = OffloadActivations,
            Gpus = Gpus,
            Sharding = PlanNames.Sharding(Sharding),
            Offload = Offload,
            Device = PlanNames.Device(Device),
            FrameworkOverheadBytes = OverheadGb is { } gb ? (long)(gb * 1e9) : null,
            PackFrozenWeights = CliOptions.PackWeights(PackWeights),
        };

        public ServeRequest ToServeRequest() => new()
        {
            MaxBatch = MaxBatch,
            Context = Context,
            Adapters = Adapters,
            MaxRank = MaxRank ?? Adapter?.Rank ?? 16,
            Targets = Targets is null ? Adapter?.Targets : TargetMatcher.Parse(Targets),
            WeightDtype = WeightDtype(),
            ComputeDtype = ComputeDtypeOrNull(),
            KvDtype = KvDtype is null ? null : Dtypes.Parse(KvDtype, "kv_dtype"),
            PrefillChunk = PrefillChunk,
            MaxPrefillTokens = MaxPrefillTokens,
            Device = ToRequest().Device,
            FrameworkOverheadBytes = OverheadGb is { } gb ? (long)(gb * 1e9) : null,
        };

        static List<int> ParseLayers(string text) =>
            text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => int.TryParse(t, out int i) && i >= 0 ? i : throw new PlanException("layers", $"'{t}' is not a layer index"))
                .ToList();
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var model = Presets.Resolve(settings.Model);
        // On stderr: --json keeps stdout the plan alone.
        if (settings.Adapter is { } adapter)
            Console.Error.WriteLine($"planning adapter {adapter.Folder} ({adapter.Summary}) on its base {adapter.BaseName}");
        if (settings.Serve)
        {
            var serve = ServePlanner.Plan(model, settings.ToServeRequest());
            if (settings.Json) Console.WriteLine(JsonSerializer.Serialize(PlanOutput.Json(serve), PlanOutput.JsonOptions));
            else PlanOutput.Write(serve);
            return 0;
        }
        var request = settings.ToRequest();
        if (CliOptions.PastContext($"--seq {settings.Seq}", settings.Seq, model.Config.MaxPositionEmbeddings) is { } past)
            Console.Error.WriteLine($"warning: {past}; planned at {settings.Seq} as asked");
        if (settings.CompareLoss)
        {
            var plans = Enum.GetValues<LossKind>().Select(l => MemoryPlanner.Plan(model, request with { Loss = l })).ToList();
            if (settings.Json) Console.WriteLine(JsonSerializer.Serialize(plans.Select(PlanOutput.Json), PlanOutput.JsonOptions));
            else PlanOutput.WriteLossComparison(model, plans);
            return 0;
        }
        if (settings.Compare)
        {
            var plans = Enum.GetValues<TuningMethod>().Select(m => MemoryPlanner.Plan(model, ForMethod(request, m))).ToList();
            if (settings.Json) Console.WriteLine(JsonSerializer.Serialize(plans.Select(PlanOutput.Json), PlanOutput.JsonOptions));
            else PlanOutput.WriteComparison(model, plans);
            return 0;
        }
        var plan = MemoryPlanner.Plan(model, request);
        if (settings.Json) Console.WriteLine(JsonSerializer.Serialize(PlanOutput.Json(plan), PlanOutput.JsonOptions));
        else PlanOutput.Write(plan);
        return 0;
    }

    /// <summary>The same run with another method; full fine-tuning cannot keep NF4 weights, so it gets bf16.</summary>
    static PlanRequest ForMethod(PlanRequest r, TuningMethod m) => r with
    {
        Method = m,
        WeightDtype = m == TuningMethod.Full && r.WeightDtype == DType.Nf4 ? DType.Bf16 : r.WeightDtype,
    };
}
