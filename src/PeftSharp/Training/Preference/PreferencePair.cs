using PeftSharp.Data;

namespace PeftSharp.Training.Preference;

/// <summary>
/// One preference example before tokenisation: the shared prompt, the chosen and the rejected response, each as text
/// segments (the loss is taken only on trainable segments, i.e. the response), and where it came from (file:line).
/// </summary>
internal sealed record PreferencePair(IReadOnlyList<TextSegment> Prompt, IReadOnlyList<TextSegment> Chosen, IReadOnlyList<TextSegment> Rejected, string Source)
{
    /// <summary>Rendered by the model's chat template: the text holds its special tokens (no BOS/EOS added), as SFT chat examples.</summary>
    public bool Rendered { get; init; }

    /// <summary>The prompt followed by one response, as the SFT pipeline tokenises examples.</summary>
    public RawExample WithResponse(IReadOnlyList<TextSegment> response) => new([.. Prompt, .. response], Source) { Rendered = Rendered };
}

/// <summary>
/// A tokenised pair: the chosen and rejected sequences (prompt + response + EOS, labels -100 on the prompt) and the
/// number of prompt tokens they share. Pairs are fed to the model as one concatenated, padded batch.
/// </summary>
internal sealed record TokenizedPair(TokenSequence Chosen, TokenSequence Rejected, int PromptLength, string Source)
{
    /// <summary>From a chat-template rendering (<see cref="PreferencePair.Rendered"/>).</summary>
    public bool Rendered { get; init; }
}

/// <summary>What tokenisation did to a preference file, reported to the user (the first offending line named).</summary>
internal sealed record PreferenceStats(int Pairs, int Kept, int Truncated, int Dropped, string? FirstTruncated, string? FirstDropped, long ResponseTokens)
{
    public override string ToString() =>
        $"{Pairs} pairs -> {Kept} kept ({ResponseTokens} response tokens with loss); {Truncated} with responses cut to fit --max-seq" +
        (FirstTruncated is null ? "" : $" (first: {FirstTruncated})") + $"; {Dropped} dropped (prompt fills --max-seq, or the responses are equal once cut)" +
        (FirstDropped is null ? "" : $" (first: {FirstDropped})");
}
