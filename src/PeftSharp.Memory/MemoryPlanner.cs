namespace PeftSharp.Memory;

/// <summary>Turns a model shape and a request into a <see cref="MemoryPlan"/>. Pure arithmetic; see README.md.</summary>
public static class MemoryPlanner
{
    /// <summary>Plan from a preset name, a config.json path or a model folder.</summary>
    public static MemoryPlan Plan(string presetOrConfigPath, PlanRequest request, ActivationModel? activations = null) =>
        Plan(Presets.Resolve(presetOrConfigPath), request, activations);

    public static MemoryPlan Plan(ModelShape model, PlanRequest request, ActivationModel? activations = null)
    {
        request.Validate();
        activations ??= ActivationModel.For(request);
        var c = model.Config;
        var compute = request.ResolvedComputeDtype;
        var tensors = TrainableParameters.For(model, request);
        long trainable = tensors.Sum(t => t.Elements);
        long total = model.TotalParameters;

        long weights = BaseWeightBytes(model, request, compute)
            + (request.Method == TuningMethod.Full ? 0 : Dtypes.Bytes(request.AdapterDtype, trainable));
        long gradients = Dtypes.Bytes(request.TrainableDtype, trainable);
        long master = request.MasterWeights && Dtypes.Is16Bit(request.TrainableDtype) ? 4 * trainable : 0;
        long moments = tensors.Sum(t => OptimizerState.Bytes(request.Optimizer, t.Elements));

        long seq = request.SequenceLength + (request.Method == TuningMethod.PromptTuning ? request.VirtualTokens : 0);
        long acts = activations.Bytes(c, request.BatchSize, seq, request.Attention, compute, request.GradientCheckpointing,
            normsTrain: request.Method == TuningMethod.Full);
        long logits = activations.LogitsBytes(c, request.BatchSize, seq);
        long dequant = request.IsQuantized
            ? Dtypes.Bytes(compute, model.Modules.Where(IsQuantizedLinear).Max(m => m.WeightElements))
            : 0;

        // Sharding: ZeRO-1 splits optimiser state, ZeRO-2 also gradients, ZeRO-3/FSDP also weights.
        int n = request.Gpus;
        var s = request.Sharding;
        long optimizer = master + moments;
        long optimizerPerGpu = s >= Sharding.Zero1 ? Dtypes.CeilDiv(optimizer, n) : optimizer;
        long gradientsPerGpu = s >= Sharding.Zero2 ? Dtypes.CeilDiv(gradients, n) : gradients;
        bool shardsWeights = s >= Sharding.Zero3;
        long weightsPerGpu = shardsWeights ? Dtypes.CeilDiv(weights, n) : weights;
        long gathered = shardsWeights && n > 1 ? Dtypes.Bytes(request.IsQuantized ? DType.Nf4 : request.WeightDtype, model.LayerParameters(0)) : 0;

        long host = 0;
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

        return new MemoryPlan
        {
            Model = model.Name,
            Request = request,
            TotalParameters = total,
            TrainableParameters = trainable,
            TrainableTensors = tensors,
            WeightsBytes = weightsPerGpu,
            GradientsBytes = gradientsPerGpu,
            OptimizerBytes = optimizerPerGpu,
            MasterWeightsBytes = master,
            ActivationsBytes = acts,
            LogitsBytes = logits,
            DequantBufferBytes = dequant,
            GatheredLayerBytes = gathered,
            FrameworkOverheadBytes = request.ResolvedOverheadBytes,
            HostBytes = host,
            PageableBytes = pageable,
            InferenceOverhead = InferenceOverhead(request, trainable, total),
        };
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

    static bool IsQuantizedLinear(ModuleShape m) => m.Kind == ModuleKind.Linear && m.Layer is not null;

    static string InferenceOverhead(PlanRequest r, long trainable, long total) => r.Method switch
    {
        TuningMethod.Full => "none; full copy per task",
        TuningMethod.Adapter => $"+{100.0 * trainable / total:0.###}% (cannot merge)",
        TuningMethod.PromptTuning => $"+{r.VirtualTokens} tokens/seq",
        _ => $"0 merged, +{100.0 * trainable / total:0.###}% unmerged",
    };
}
