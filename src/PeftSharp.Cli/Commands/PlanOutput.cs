using System.Text.Json;
using PeftSharp.Memory;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>Renders memory plans as Spectre tables or JSON. GB here means 10^9 bytes.</summary>
static class PlanOutput
{
    public static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    static string Gb(long bytes) => $"{bytes / 1e9:0.00}";

    static string Count(long n) => n switch
    {
        >= 1_000_000_000 => $"{n / 1e9:0.##}B",
        >= 1_000_000 => $"{n / 1e6:0.##}M",
        >= 1_000 => $"{n / 1e3:0.##}K",
        _ => n.ToString(),
    };

    public static object Json(MemoryPlan p) => new
    {
        model = p.Model,
        method = PlanNames.Name(p.Request.Method),
        total_params = p.TotalParameters,
        trainable_params = p.TrainableParameters,
        trainable_percent = p.TrainablePercent,
        weights_bytes = p.WeightsBytes,
        gradients_bytes = p.GradientsBytes,
        gradients_at_peak_bytes = p.GradientsAtPeakBytes,
        optimizer_bytes = p.OptimizerBytes,
        master_weights_bytes = p.MasterWeightsBytes,
        activations_bytes = p.ActivationsBytes,
        activations_at_peak_bytes = p.ActivationsAtPeakBytes,
        other_bytes = p.OtherBytes,
        logits_bytes = p.LogitsBytes,
        dequant_buffer_bytes = p.DequantBufferBytes,
        gathered_layer_bytes = p.GatheredLayerBytes,
        allocator_slack_bytes = p.AllocatorSlackBytes,
        optimizer_step_temporary_bytes = p.OptimizerStepTemporaryBytes,
        pass_bytes = p.PassBytes,
        step_bytes = p.StepBytes,
        peak_phase = p.PeakPhase,
        framework_overhead_bytes = p.FrameworkOverheadBytes,
        runtime_terms = p.RuntimeTerms.Select(t => new { name = t.Name, bytes = t.Bytes, basis = t.Basis }),
        loss = PlanNames.Name(p.Request.Loss),
        memory = PlanNames.Name(p.Request.Memory),
        compile = p.Request.Compile,
        checkpointing = p.Request.GradientCheckpointing,
        offload_activations = p.Request.OffloadActivations,
        activation_profile = p.ActivationProfile,
        total_bytes = p.TotalBytes,
        host_bytes = p.HostBytes,
        pageable_bytes = p.PageableBytes,
        gpus = p.Request.Gpus,
        inference_overhead = p.InferenceOverhead,
        fits = Gpus.Common.ToDictionary(g => g.Name, g => p.Fits(g.Bytes)),
    };

    public static void Write(MemoryPlan p)
    {
        var r = p.Request;
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]{p.Model}[/] {PlanNames.Name(r.Method)}: batch {r.BatchSize} x seq {r.SequenceLength}, {Dtypes.Name(r.WeightDtype)} weights, {PlanNames.Name(r.Optimizer)}, per GPU of {r.Gpus} (GB = 10^9 bytes)");
        AnsiConsole.MarkupLineInterpolated(
            $"loss {PlanNames.Name(r.Loss)}, {(r.Device == DeviceKind.Cuda ? $"memory {PlanNames.Name(r.Memory)}" : "cpu resident")}, activations: {p.ActivationProfile}{(p.ActivationPaths != "" ? $" ({p.ActivationPaths})" : "")}{(r.GradientCheckpointing ? ", checkpointing" : "")}{(r.OffloadActivations ? ", offloaded" : "")}{(r.Compile ? ", compiled" : "")}");
        var table = new Table().AddColumn("Resident").AddColumn(new TableColumn("GB").RightAligned()).AddColumn(new TableColumn("Share").RightAligned())
            .AddColumn("Rests on");
        void Row(string name, long bytes, string basis) =>
            table.AddRow(Markup.Escape(name), Gb(bytes), $"{100.0 * bytes / p.TotalBytes:0.0}%", Markup.Escape(basis));
        Row("weights", p.WeightsBytes, r.IsQuantized ? "NF4 + double quant (bitsandbytes), rest in compute dtype" : $"{Dtypes.Name(r.WeightDtype)} storage");
        Row(p.GradientsAtPeakBytes == p.GradientsBytes ? "gradients" : $"gradients (of {Gb(p.GradientsBytes)} GB; freed before each forward)",
            p.GradientsAtPeakBytes, p.GradientsAtPeakBytes == p.GradientsBytes ? "trainable dtype" : "zero_grad(set_to_none): they grow as backward frees activations");
        Row(p.MasterWeightsBytes > 0 ? "optimizer state (incl. fp32 master)" : "optimizer state", p.OptimizerBytes,
            !r.MasterWeights && Dtypes.Is16Bit(r.TrainableDtype) ? "torch.optim: moments in the parameter dtype" : "fp32 moments (8-bit: bitsandbytes blocks)");
        Row(p.ActivationsAtPeakBytes == p.ActivationsBytes ? "activations" : $"activations (of {Gb(p.ActivationsBytes)} GB; recompute after the loss)",
            p.ActivationsAtPeakBytes, ActivationBasis(p));
        Row("other: logits + loss buffers", p.LogitsBytes, LossBasis(r.Loss));
        if (p.DequantBufferBytes > 0) Row("other: dequantised layer", p.DequantBufferBytes, r.Device == DeviceKind.Cpu && r.GradientCheckpointing
            ? "largest NF4 Linear + one layer's, kept for its backward, in the compute dtype" : "largest NF4 Linear in the compute dtype");
        if (p.GatheredLayerBytes > 0) Row("other: all-gathered layer", p.GatheredLayerBytes, "one decoder block (ZeRO-3/FSDP)");
        if (p.AllocatorSlackBytes > 0) Row("other: allocator slack", p.AllocatorSlackBytes, r.Device == DeviceKind.Cpu
            ? $"peft train's buffer cache: idle blocks up to {CpuRuntime.BufferCacheSlackFraction:P0} of activations + loss + dequantised ({CpuRuntime.BufferCacheVariable}=0: none)"
            : $"reserved - allocated = {MemoryPlanner.AllocatorSlackFraction:P0} (peft#1469)");
        // The runtime allowance: what the process holds besides tensors, term by term.
        foreach (var t in p.RuntimeTerms) Row($"runtime allowance: {t.Name}", t.Bytes, t.Basis);
        table.AddRow("[bold]total[/]", $"[bold]{Gb(p.TotalBytes)}[/]", "100%", Markup.Escape($"peak at the {p.PeakPhase}"));
        AnsiConsole.Write(table);
        AnsiConsole.WriteLine($"forward/backward peak {Gb(p.PassBytes)} GB; optimizer step peak {Gb(p.StepBytes)} GB (all gradients + state"
            + (p.OptimizerStepTemporaryBytes > 0 ? $" + foreach AdamW temporary {Gb(p.OptimizerStepTemporaryBytes)} GB)" : ")"));
        AnsiConsole.WriteLine($"trainable {p.TrainableParameters:N0} of {p.TotalParameters:N0} parameters ({p.TrainablePercent:0.####}%)");
        if (p.HostBytes > 0) AnsiConsole.WriteLine($"CPU (offloaded, all GPUs): {Gb(p.HostBytes)} GB");
        if (p.PageableBytes > 0) AnsiConsole.WriteLine($"pageable optimiser state (evicted to host under pressure): {Gb(p.PageableBytes)} GB");
        var fits = GpuTable().AddColumn(new TableColumn("Headroom GB").RightAligned());
        foreach (var g in Gpus.Common)
            fits.AddRow(Markup.Escape(g.Name), Gb(g.Bytes), p.Fits(g.Bytes) ? "[green]yes[/]" : "[red]no[/]", Gb(p.Headroom(g.Bytes)));
        AnsiConsole.Write(fits);
    }

    /// <summary>The cards' table: each card's memory in GB (10^9 bytes), the unit of the plan and the headroom, beside
    /// its name (which says GiB where the card is binary: a "24 GB" card holds 25.77 GB).</summary>
    static Table GpuTable() => new Table().AddColumn("GPU").AddColumn(new TableColumn("Memory GB").RightAligned()).AddColumn("Fits");

    static string ActivationBasis(MemoryPlan p) => p.ActivationProfile switch
    {
        "transformers" => "tensors HF Llama + PEFT keep on a GPU, counted from the code" + (p.Request.GradientCheckpointing ? "; layer inputs + one layer recomputed" : ""),
        "torchsharp-cpu-fp32" => "tensors this project's layers keep under libtorch CPU autograd (bench/plan-vs-measured.sh)",
        "torchsharp-cpu-bf16" => "tensors this project's layers keep under libtorch CPU autograd with a 16-bit base: fp32 norm upcasts, the 16-bit input of each LoRA module (fp32 for DoRA)",
        "torchsharp-cpu-fp32-kernels" => "tensors this project's layers keep under libtorch CPU autograd with its AVX-512 kernels (attention, RMSNorm, SwiGLU, loss; bench/plan-vs-measured.sh)",
        "torchsharp-cpu-bf16-kernels" => "tensors this project's layers keep under libtorch CPU autograd with a 16-bit base and its AVX-512 kernels: 16-bit norm inputs, the 16-bit input of each LoRA module (fp32 for DoRA)",
        _ => "Korthikanti et al. 2022",
    };

    static string LossBasis(LossKind loss) => loss switch
    {
        LossKind.Full => "logits + 3 fp32 b*s*V buffers (transformers ForCausalLMLoss)",
        LossKind.Chunked => "logits + fp32 log-softmax + one chunk's gradients (torchtune, 8 chunks)",
        _ => "no b*s*V tensor: hidden gradient + one chunk (Liger sizing)",
    };

    public static void WriteLossComparison(ModelShape model, IReadOnlyList<MemoryPlan> plans)
    {
        var r = plans[0].Request;
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]{model.Name}[/] {PlanNames.Name(r.Method)} (vocab {model.Config.VocabSize:N0}): batch {r.BatchSize} x seq {r.SequenceLength}, memory {PlanNames.Name(r.Memory)} (GB = 10^9 bytes)");
        var table = new Table().AddColumn("Loss").AddColumn(new TableColumn("Loss buffers GB").RightAligned())
            .AddColumn(new TableColumn("Share of peak").RightAligned()).AddColumn(new TableColumn("Total GB").RightAligned())
            .AddColumn("Rests on");
        foreach (var p in plans)
            table.AddRow(PlanNames.Name(p.Request.Loss), Gb(p.LogitsBytes), $"{100.0 * p.LogitsBytes / p.TotalBytes:0.0}%",
                Gb(p.TotalBytes), Markup.Escape(LossBasis(p.Request.Loss)));
        AnsiConsole.Write(table);
        long saved = plans[0].TotalBytes - plans[^1].TotalBytes;
        AnsiConsole.WriteLine($"the loss implementation decides {Gb(saved)} GB ({100.0 * saved / plans[0].TotalBytes:0.0}% of the full-loss peak)");
    }

    public static object Json(ServePlan p) => new
    {
        model = p.Model,
        mode = "serve",
        max_batch = p.Request.MaxBatch,
        context = p.Request.Context,
        adapters = p.Request.Adapters,
        max_rank = p.Request.MaxRank,
        kv_dtype = Dtypes.Name(p.Request.ResolvedKv),
        weights_bytes = p.WeightsBytes,
        kv_bytes_per_token = p.KvBytesPerToken,
        kv_bytes_per_sequence = p.KvBytesPerSequence,
        kv_cache_bytes = p.KvCacheBytes,
        kv_growth_bytes = p.KvGrowthBytes,
        adapter_bytes_each = p.AdapterBytesEach,
        adapters_bytes = p.AdaptersBytes,
        max_prefill_tokens = p.Request.MaxPrefillTokens,
        prefill_tokens = p.Request.ResolvedPrefillTokens,
        prefill_bytes = p.PrefillBytes,
        scoring_tokens = p.ScoringTokens,
        scoring_bytes = p.ScoringBytes,
        framework_overhead_bytes = p.FrameworkOverheadBytes,
        total_bytes = p.TotalBytes,
        cpu_allocator = p.Request.Device == DeviceKind.Cpu ? ServeAllocator : null,
        concurrent_sequences = Gpus.Common.ToDictionary(g => g.Name, g => p.ConcurrentSequences(g.Bytes)),
        fits = Gpus.Common.ToDictionary(g => g.Name, g => p.Fits(g.Bytes)),
    };

    public static void Write(ServePlan p)
    {
        var r = p.Request;
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]{p.Model}[/] serving: {r.MaxBatch} sequences x {r.Context} tokens, {r.Adapters} adapter(s) at rank <= {r.MaxRank}, {Dtypes.Name(r.WeightDtype)} weights, {Dtypes.Name(r.ResolvedKv)} KV cache (GB = 10^9 bytes)");
        var table = new Table().AddColumn("Resident").AddColumn(new TableColumn("GB").RightAligned()).AddColumn(new TableColumn("Share").RightAligned())
            .AddColumn("Rests on");
        void Row(string name, long bytes, string basis) =>
            table.AddRow(Markup.Escape(name), Gb(bytes), $"{100.0 * bytes / p.TotalBytes:0.0}%", Markup.Escape(basis));
        Row("weights", p.WeightsBytes, r.WeightDtype == DType.Nf4 ? "NF4 + double quant, rest in compute dtype" : $"{Dtypes.Name(r.WeightDtype)} storage");
        Row($"KV cache ({p.KvBytesPerToken / 1024.0:0.#} KiB/token)", p.KvCacheBytes, "2 x layers x kv_heads x head_dim per token (GQA)"
            + (p.KvBytesPerSequence < p.KvBytesPerToken * r.Context ? $"; sliding-window layers hold their window: {p.KvBytesPerSequence / 1e6:0.#} MB per sequence" : ""));
        if (p.KvGrowthBytes > 0) Row("KV cache rebuild", p.KvGrowthBytes, "one layer's old copy while rows join or leave; never during a prefill: the larger of the two counts");
        Row($"adapters ({r.Adapters} x {p.AdapterBytesEach / 1e6:0.##} MB)", p.AdaptersBytes, "r x (in + out) per adapted module, at the largest rank");
        Row($"prefill ({r.ResolvedPrefillTokens} tokens)", p.PrefillBytes, $"largest prefill forward (--max-prefill-tokens {r.MaxPrefillTokens}): one layer's working set (GQA: its keys and values repeated to every head) + last-token fp32 logits per row; the largest of prefill, scoring and rebuild counts");
        Row($"prompt scoring ({p.ScoringTokens} tokens)", p.ScoringBytes, "a scored prompt's chunk (echo + logprobs): its layer working set + every position's logits and their fp32 log-softmax; the largest of prefill, scoring and rebuild counts");
        Row("framework overhead", p.FrameworkOverheadBytes, r.Device == DeviceKind.Cuda ? "CUDA context + kernels + cuBLAS workspace" : "libtorch + .NET runtime, measured");
        table.AddRow("[bold]total[/]", $"[bold]{Gb(p.TotalBytes)}[/]", "100%", "");
        AnsiConsole.Write(table);
        var fits = GpuTable().AddColumn(new TableColumn($"Sequences of {r.Context} tokens").RightAligned());
        foreach (var g in Gpus.Common)
            fits.AddRow(Markup.Escape(g.Name), Gb(g.Bytes), p.Fits(g.Bytes) ? "[green]yes[/]" : "[red]no[/]", p.ConcurrentSequences(g.Bytes).ToString("N0"));
        AnsiConsole.Write(fits);
        if (r.Device == DeviceKind.Cpu)
            AnsiConsole.MarkupLineInterpolated($"[dim]On CPU this is peft serve's resident memory on {ServeAllocator} (src/PeftSharp.Memory/README.md).[/]");
    }

    /// <summary>The CPU allocator a serve plan assumes: `peft serve`'s, chosen as `peft train` chooses it (the engine's
    /// Native/TensorAllocator under the same condition, <see cref="CpuRuntime.BufferCache"/>).</summary>
    static string ServeAllocator => CpuRuntime.BufferCache
        ? $"the buffer cache (freed buffers reused by size under the peak in use; {CpuRuntime.BufferCacheVariable}=0: glibc's fixed mmap threshold, the same plan)"
        : $"glibc's fixed mmap threshold (each buffer >= 128 KiB unmapped when freed; {CpuRuntime.BufferCacheVariable}=0 or not Linux x64)";

    public static void WriteComparison(ModelShape model, IReadOnlyList<MemoryPlan> plans)
    {
        var r = plans[0].Request;
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]{model.Name}[/] ({model.TotalParameters:N0} params): batch {r.BatchSize} x seq {r.SequenceLength}, per GPU of {r.Gpus}, loss {PlanNames.Name(r.Loss)}, memory {PlanNames.Name(r.Memory)}{(r.Compile ? ", compiled" : "")}{(r.OffloadActivations ? ", offloaded activations" : "")} (GB = 10^9 bytes)");
        var table = new Table().AddColumn("Method").AddColumn(new TableColumn("Trainable").RightAligned())
            .AddColumn(new TableColumn("%").RightAligned()).AddColumn(new TableColumn("GB").RightAligned())
            .AddColumn("Inference overhead");
        foreach (var p in plans)
            table.AddRow(PlanNames.Name(p.Request.Method), Count(p.TrainableParameters), $"{p.TrainablePercent:0.###}",
                Gb(p.TotalBytes), Markup.Escape(p.InferenceOverhead));
        AnsiConsole.Write(table);
    }
}
