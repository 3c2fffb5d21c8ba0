using PeftSharp.Generation;

namespace PeftSharp;

/// <summary>
/// How <see cref="PeftModel.Generate(string, int?, GenerationOptions?)"/> and <see cref="PeftModel.GenerateStream(string, GenerationOptions?)"/> pick
/// tokens, with Hugging Face's meanings: greedy unless <see cref="Temperature"/> &gt; 0. Generation stops after
/// <see cref="MaxNewTokens"/>, at the model's EOS ids (config.json, generation_config.json, the tokenizer), at
/// <see cref="StopTokenIds"/>, or before the first of <see cref="StopSequences"/> (which is not returned).
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>At most this many new tokens (EOS and stop ids count).</summary>
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>0 = greedy (argmax).</summary>
    public double Temperature { get; init; }
    /// <summary>Nucleus sampling mass in (0, 1]; 1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>Sample among the K most likely tokens; 0 = off. 50 by default, as Hugging Face's generate
    /// (<see cref="SamplingOptions.TopK"/>).</summary>
    public int TopK { get; init; } = new SamplingOptions().TopK;
    /// <summary>HF's repetition penalty; 1 = off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Seed of the sampler (sampling with the same seed repeats its output).</summary>
    public int? Seed { get; init; }
    /// <summary>Texts that end generation; the text is cut before the first one found.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];
    /// <summary>Token ids that end generation besides EOS (e.g. <see cref="PeftModel.EndOfTurnIds"/> for chat).</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    internal SamplingOptions ToSampling()
    {
        var s = new SamplingOptions
        {
            MaxNewTokens = MaxNewTokens, Temperature = Temperature, TopP = TopP, TopK = TopK, RepetitionPenalty = RepetitionPenalty, Seed = Seed,
        };
        s.Validate();
        return s;
    }
}
