namespace PeftSharp.Memory;

/// <summary>Turns a model shape and a request into a <see cref="MemoryPlan"/>. Pure arithmetic; see README.md.</summary>
public static class MemoryPlanner
{
    /// <summary>Plans a run of a preset model, a model given by its config.json, or a model folder holding one.</summary>
    /// <param name="presetOrConfigPath">A name from <see cref="Presets.Names"/> (case-insensitive), a path to a Hugging
    /// Face config.json, or a folder holding one.</param>
    /// <param name="request">What the run does; <see cref="PlanRequest.Validate"/> is applied first.</param>
    /// <returns>The per-GPU memory of the run, in bytes (see <see cref="MemoryPlan"/> for what each row counts).</returns>
    /// <exception cref="PlanException">An unknown preset, an unreadable or invalid config.json (the field or file is
    /// named), an unsupported <c>model_type</c>, an invalid request, or target modules that match nothing.</exception>
    public static MemoryPlan Plan(string presetOrConfigPath, PlanRequest request) =>
        Plan(Presets.Resolve(presetOrConfigPath), request);

    /// <summary>Plans a run of a model shape (from <see cref="ModelShape.FromConfig"/>, <see cref="ModelShape.Load"/> or
    /// <see cref="Presets.Shape"/>). The activation profile follows the request: PyTorch + transformers + PEFT on CUDA,
    /// this project's trainer on CPU (<see cref="MemoryPlan.ActivationProfile"/> names it).</summary>
    /// <param name="model">The model's modules and config.</param>
    /// <param name="request">What the run does; <see cref="PlanRequest.Validate"/> is applied first.</param>
    /// <returns>The per-GPU memory of the run, in bytes.</returns>
    /// <exception cref="PlanException">An invalid request (the field is named) or target modules that match nothing.</exception>
    public static MemoryPlan Plan(ModelShape model, PlanRequest request) => Plan(model, request, null);

    /// <summary>As the public overload, with another activation profile (calibration, the textbook figure).</summary>
    internal static MemoryPlan Plan(ModelShape model, PlanRequest request, ActivationModel? activations)
    {
        request.Validate();
        activations ??= ActivationModel.For(request);
        var c = model.Config;
        var compute = request.ResolvedComputeDtype;
        var runtimeTerms = request.RuntimeTermsFor(c.VocabSize);
        if (PackedWeightsTerm(model, request) is { } packed) runtimeTerms = [.. runtimeTerms, packed];
        var tensors = TrainableParameters.For(model, request);
        long trainable = tensors.Sum(t => t.Elements);
        long total = model.TotalParameters;

        long weights = BaseWeightBytes(model, request, compute)
            + (request.Method == TuningMethod.Full ? 0 : Dtypes.Bytes(request.AdapterDtype, trainable));
        long gradients = Dtypes.Bytes(request.TrainableDtype, trainable);
        bool sixteenBit = Dtypes.Is16Bit(request.TrainableDtype);
        long master = request.MasterWeights && sixteenBit ? 4 * trainable : 0;
        long moments = tensors.Sum(t => OptimizerState.Bytes(request.Optimizer, t.Elements, sixteenBit && !request.MasterWeights));

        long seq = request.SequenceLength + (request.Method == TuningMethod.PromptTuning ? request.VirtualTokens : 0);
        var (kept, inFlight, offloadedActs) = Activations(model, request, activations, seq, compute);
        long acts = SaturatingBytes.Sum(kept, inFlight);
        long logits = activations.LossBytes(c, request.BatchSize, seq, request.Loss, compute);
        // The in-flight layer and the loss buffers coexist unless the profile frees the loss before recomputing.
        long actsAtPeak = inFlight > 0 && activations.LossFreedBeforeRecompute ? SaturatingBytes.Sum(kept, Math.Max(0, inFlight - logits)) : acts;
        long dequant = request.IsQuantized ? DequantBytes(model, request, compute) : 0;

        // Sharding: ZeRO-1 splits optimiser state, ZeRO-2 also gradients, ZeRO-3/FSDP also weights.
        int n = request.Gpus;
        var s = request.Sharding;
        long optimizer = master + moments;
        long optimizerPerGpu = s >= Sharding.Zero1 ? Dtypes.CeilDiv(optimizer, n) : optimizer;
        long gradientsPerGpu = s >= Sharding.Zero2 ? Dtypes.CeilDiv(gradients, n) : gradients;
        bool shardsWeights = s >= Sharding.Zero3;
        long weightsPerGpu = shardsWeights ? Dtypes.CeilDiv(weights, n) : weights;
        long gathered = shardsWeights && n > 1 ? Dtypes.Bytes(request.IsQuantized ? DType.Nf4 : request.WeightDtype, model.LayerParameters(0)) : 0;

        long host = offloadedActs;
        if (request.Offload)
        {
            host += optimizerPerGpu * n;
            optimizerPerGpu = 0;
            if (shardsWeights)
            {
                host += weightsPerGpu * n;
                weightsPerGpu = 0;
            }
        }
        long pageable = 0;
        if (OptimizerState.IsPaged(request.Optimizer) && optimizerPerGpu > 0)
        {
            // Only the moments page; master weights stay resident.
            long pagedMoments = s >= Sharding.Zero1 ? Dtypes.CeilDiv(moments, n) : moments;
            pageable = pagedMoments;
            optimizerPerGpu -= pagedMoments;
        }

        bool foreachAdam = activations.ForeachOptimizerTemporary && request.Optimizer == OptimizerKind.AdamW && optimizerPerGpu > 0;
        long stepTemp = foreachAdam
            ? Dtypes.CeilDiv(trainable * (sixteenBit && !request.MasterWeights ? 2 : 4), s >= Sharding.Zero1 ? n : 1)
            : 0;

        var plan = new MemoryPlan
        {
            Model = model.Name,
            Request = request,
            TotalParameters = total,
            TrainableParameters = trainable,
            TrainableTensors = tensors,
            WeightsBytes = weightsPerGpu,
            GradientsBytes = gradientsPerGpu,
            OptimizerStepTemporaryBytes = stepTemp,
            GradientsAtPeakBytes = activations.GradientsFreedBeforeForward && request.GradientAccumulation == 1
                ? Math.Max(0, gradientsPerGpu - (actsAtPeak + logits))
                : gradientsPerGpu,
            OptimizerBytes = optimizerPerGpu,
            MasterWeightsBytes = master,
            ActivationsBytes = acts,
            ActivationsAtPeakBytes = actsAtPeak,
            LogitsBytes = logits,
            DequantBufferBytes = dequant,
            GatheredLayerBytes = gathered,
            FrameworkOverheadBytes = runtimeTerms.Sum(t => t.Bytes),
            RuntimeTerms = runtimeTerms,
            HostBytes = host,
            PageableBytes = pageable,
            InferenceOverhead = InferenceOverhead(request, trainable, total),
            ActivationProfile = activations.Name,
            ActivationPaths = activations.Cpu?.Describe(c)
                ?? (request.Attention != AttentionKind.Eager && activations.RunsEager(c, request.Attention) ? $"eager attention: soft-capped scores (SDPA cannot soft-cap)" : ""),
        };
        return plan with { AllocatorSlackBytes = AllocatorSlack(request, plan.TotalBytes - plan.FrameworkOverheadBytes, actsAtPeak + logits + dequant) };
    }

    /// <summary>
    /// What PyTorch's caching allocator reserves beyond the tensors at the peak, as a share of the allocated peak
    /// (<c>max_memory_reserved / max_memory_allocated - 1</c>): blocks rounded up into 2 MiB / 20 MiB segments and
    /// split blocks a later, larger request cannot reuse. 4%: the middle of the 3.0-4.4% that
    /// huggingface/peft#1469 reports for full and LoRA training peaks (peak_memory_alloc vs peak_memory_reserved).
    /// </summary>
    internal const double AllocatorSlackFraction = 0.04;

    /// <summary>On CUDA PyTorch's caching allocator's (above); on CPU, where this machine's training processes run `peft
    /// train`'s buffer cache, the idle share its cap allows (<see cref="CpuRuntime.BufferCacheSlackFraction"/>) of the
    /// step's transient tensors, unless every step has the same shapes (<see cref="PlanRequest.FixedShapes"/>: the cache
    /// reuses its blocks size for size and keeps none idle). None where the runtime allowance is given by hand.</summary>
    static long AllocatorSlack(PlanRequest r, long allocated, long transient) => r.Device switch
    {
        DeviceKind.Cuda when r.Memory >= MemoryView.Reserved => (long)Math.Ceiling(allocated * AllocatorSlackFraction),
        DeviceKind.Cpu when r.FrameworkOverheadBytes is null && CpuRuntime.BufferCache && !r.FixedShapes => (long)Math.Ceiling(transient * CpuRuntime.BufferCacheSlackFraction),
        _ => 0,
    };

    /// <summary>Saved activations on the device and on the host. PEFT keeps, per LoRA module, the input its A matrix
    /// multiplies in the adapter dtype (a cast copy per module when it differs from the compute dtype; else the input
    /// itself, counted per module: an upper bound where q/k/v share one) and, with dropout, its 1-byte mask; DoRA also
    /// the base and LoRA results its magnitude scales. Checkpointing keeps each layer's input and recomputes one layer
    /// at a time; offloading moves what is kept to the host. <c>InFlight</c> is the recomputed (or offloaded, in-flight)
    /// layer, which the profile may overlap with the loss buffers.</summary>
    static (long Kept, long InFlight, long Host) Activations(ModelShape model, PlanRequest r, ActivationModel a, long seq, DType compute)
    {
        var c = model.Config;
        bool baseTrains = r.Method == TuningMethod.Full;
        var (layer, widest, mask) = a.Layers(c, r.BatchSize, seq, r.Attention, compute, baseTrains, r.Compile,
            linearsKeepInputs: r.IsQuantized && a.QuantizedLinearsKeepInputs);
        double adapterInputs = 0;
        if (a.CountsAdapterInputs && r.UsesLora)
        {
            var targets = r.Targets ?? TargetMatcher.DefaultFor(c.ModelType);
            var adapted = model.Modules.Where(m => m.Kind == ModuleKind.Linear && m.Layer is not null && targets.Matches(m)).ToList();
            var inputDtype = a.AdapterInputsInComputeDtype && !r.IsDora ? compute : r.AdapterDtype;   // DoRA still casts up
            double perToken = adapted.Sum(m => m.In) * (Dtypes.BytesPerElement(inputDtype) + (r.LoraDropout > 0 ? 1 : 0));
            if (r.IsDora) perToken += adapted.Sum(m => m.Out) * (Dtypes.BytesPerElement(compute) + Dtypes.BytesPerElement(r.AdapterDtype));
            adapterInputs = (double)seq * r.BatchSize * perToken;
        }
        int layers = c.NumHiddenLayers;
        double fullLayer = layer + adapterInputs / layers, widestLayer = widest + adapterInputs / layers;
        // A sliding window's mask (CPU, window shorter than the sequence) lives through the whole forward and backward.
        if (!r.GradientCheckpointing && !r.OffloadActivations)
            return ((long)Math.Ceiling(fullLayer * layers + mask), 0, 0);
        double kept = r.GradientCheckpointing ? a.CheckpointBytesPerLayer(c, r.BatchSize, seq, compute) : fullLayer;
        return r.OffloadActivations
            ? ((long)Math.Ceiling((r.GradientCheckpointing ? kept : 0) + mask), (long)Math.Ceiling(widestLayer), (long)Math.Ceiling(kept * layers))
            : ((long)Math.Ceiling(kept * layers + mask), (long)Math.Ceiling(widestLayer), 0);
    }

    /// <summary>The frozen weights' packed copies of a CPU fp32 run that packs them (<see cref="CpuRuntime.PacksWeights"/>):
    /// the engine packs every dense frozen fp32 Linear, both orientations: all of them with a dense base, lm_head alone
    /// with an NF4 one (QLoRA keeps it dense; a head tied to the embedding is not a Linear's weight).</summary>
    static RuntimeTerm? PackedWeightsTerm(ModelShape model, PlanRequest r)
    {
        if (r.Device != DeviceKind.Cpu || r.FrameworkOverheadBytes is not null || r.Method == TuningMethod.Full
            || r.ResolvedComputeDtype != DType.Fp32 || (!r.IsQuantized && r.WeightDtype != DType.Fp32)) return null;
        long frozen = Dtypes.Bytes(DType.Fp32, model.Modules.Where(m => m.Kind == ModuleKind.Linear && !(r.IsQuantized && IsQuantizedLinear(m))).Sum(m => m.WeightElements));
        if (!CpuRuntime.PacksWeights(r.PackFrozenWeights, frozen)) return null;
        return new RuntimeTerm("frozen weights packed for MKL", CpuRuntime.PackedWeightBytes(frozen),
            (r.PackFrozenWeights is null ? "auto: " : "--pack-weights on: ") + "2 x the frozen fp32 Linear weights"
            + (r.IsQuantized ? " (lm_head; the NF4 ones are dequantised per call)" : "") + " (forward and backward layouts)" + (r.PackFrozenWeights is null ? "; --pack-weights off drops it" : ""));
    }

    /// <summary>Frozen or trained base weights. QLoRA keeps the decoder blocks' Linear weights in NF4 + double
    /// quant and everything else (embeddings, norms, lm_head, biases) in the compute dtype.</summary>
    static long BaseWeightBytes(ModelShape model, PlanRequest request, DType compute)
    {
        if (!request.IsQuantized) return Dtypes.Bytes(request.WeightDtype, model.TotalParameters);
        return model.Modules.Sum(m => IsQuantizedLinear(m)
            ? Dtypes.Nf4Bytes(m.WeightElements) + Dtypes.Bytes(compute, m.BiasElements)
            : Dtypes.Bytes(compute, m.Parameters));
    }

    /// <summary>
    /// Bytes of dense weight per dequantisation tile on CPU: PeftSharp multiplies a quantised weight larger than this a
    /// tile of rows at a time (PeftSharp.Quantization.QuantizedLinearFunction takes its default from here), so its
    /// scratch buffer holds at most one tile.
    /// </summary>
    internal const long CpuDequantTileBytes = 2 << 20;

    /// <summary>Fewest output rows per CPU dequantisation tile (QuantizedLinearFunction.MinTileRows: MKL's single-threaded
    /// GEMM is slow below it), so a wide weight's tiles outgrow <see cref="CpuDequantTileBytes"/>.</summary>
    internal const long CpuDequantTileRows = 256;

    /// <summary>Threads the planner assumes share a CPU dequantisation (each holds its own tile): this project's 2-core box.</summary>
    internal const int CpuDequantTeam = 2;

    /// <summary>
    /// QLoRA's dense weights: the scratch buffer the matmul reads them from (the largest quantised Linear dequantised
    /// whole; on CPU in fp32 at most one tile of <see cref="CpuDequantTileBytes"/>); on CPU under checkpointing also one decoder
    /// layer's quantised Linears, which PeftSharp keeps from the recomputed forward for that layer's backward
    /// (PeftSharp.Quantization.DequantReuse: one layer, so the backward does not dequantise again).
    /// Where fp32 tiles go straight into MKL's packed layout (PeftSharp.Quantization.Nf4PanelTile) each team thread's
    /// pages hold its largest tile plus the layout's padding (at most 12% at the shapes measured, under 0.3 MB here), which
    /// this term leaves out.
    /// </summary>
    static long DequantBytes(ModelShape model, PlanRequest r, DType compute)
    {
        var linears = model.Modules.Where(IsQuantizedLinear).ToList();
        long largest = Dtypes.Bytes(compute, linears.Max(m => m.WeightElements));
        // 16-bit compute: the backward multiplies by the whole weight (tiles would round grad_x once per tile).
        // A tile holds at least CpuDequantTileRows rows of the widest input, one per team thread.
        long tiles = Math.Max(CpuDequantTileBytes, Dtypes.Bytes(compute, CpuDequantTeam * CpuDequantTileRows * linears.Max(m => m.In)));
        long scratch = r.Device == DeviceKind.Cpu && compute == DType.Fp32 ? Math.Min(largest, tiles) : largest;
        long keptLayer = r.Device == DeviceKind.Cpu && r.GradientCheckpointing
            ? Dtypes.Bytes(compute, linears.GroupBy(m => m.Layer).Max(g => g.Sum(m => m.WeightElements)))
            : 0;
        return scratch + keptLayer;
    }

    static bool IsQuantizedLinear(ModuleShape m) => m.Kind == ModuleKind.Linear && m.Layer is not null;

    static string InferenceOverhead(PlanRequest r, long trainable, long total) => r.Method switch
    {
        TuningMethod.Full => "none; full copy per task",
        TuningMethod.Adapter => $"+{100.0 * trainable / total:0.###}% (cannot merge)",
        TuningMethod.PromptTuning => $"+{r.VirtualTokens} tokens/seq",
        _ => $"0 merged, +{100.0 * trainable / total:0.###}% unmerged",
    };
}
