namespace PeftSharp.Generation;

/// <summary>
/// How to pick each next token, with Hugging Face's meanings. Temperature 0 means greedy (argmax). TopK 0 and TopP 1
/// switch those filters off (TopK defaults to HF's 50); RepetitionPenalty 1 switches the penalty off (HF's RepetitionPenaltyLogitsProcessor:
/// applied before temperature, in greedy decoding too).
/// </summary>
internal sealed record SamplingOptions
{
    /// <summary>At most this many new tokens (a stop id counts); default 64.</summary>
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>Softmax temperature, &gt;= 0; 0 (the default) = greedy.</summary>
    public double Temperature { get; init; }
    /// <summary>Nucleus sampling: keep the most likely tokens whose probabilities sum to this, in (0, 1]; 1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>50 unless set, as transformers' <c>GenerationConfig</c> (<c>self.top_k = kwargs.pop("top_k", 50)</c> in
    /// generation/configuration_utils.py): HF's generate samples among the 50 most likely tokens unless generation_config.json
    /// or the caller says otherwise. Greedy decoding ignores it (the argmax is among them).</summary>
    public int TopK { get; init; } = 50;
    /// <summary>HF's repetition penalty (&gt; 0) on tokens of the prompt and the output so far; 1 = off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Seed of the sampler's random numbers; null = a fresh seed each time.</summary>
    public int? Seed { get; init; }

    /// <summary>Greedy with nothing that changes the logits first: the argmax of the raw logits is the token.</summary>
    public bool IsPlainGreedy => Temperature == 0 && RepetitionPenalty == 1.0;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"max new tokens must be >= 0 (got {MaxNewTokens})");
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentException($"temperature must be >= 0 (got {Temperature})");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1] (got {TopP})");
        if (TopK < 0) throw new ArgumentException($"top-k must be >= 0 (0 = off; got {TopK})");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw new ArgumentException($"repetition penalty must be > 0 (1 = off; got {RepetitionPenalty})");
    }
}
