namespace PeftSharp.Data;

/// <summary>
/// Token ids and their labels, aligned (Hugging Face convention): Labels[i] is Ids[i] where the loss applies and
/// <see cref="Ignore"/> (-100) elsewhere. The shift to next-token targets happens in the loss.
/// </summary>
internal sealed record TokenSequence(int[] Ids, int[] Labels)
{
    public const int Ignore = -100;
    /// <summary>Get-only (no with-expression can replace it), so <see cref="LossTokens"/> stays its count.</summary>
    public int[] Labels { get; } = Labels;
    public int Length => Ids.Length;
    /// <summary>Next-token targets that carry loss: labels from position 1 on (position 0 has no context) that are not <see cref="Ignore"/>. Counted once.</summary>
    public int LossTokens { get; } = CountLossTokens(Labels);

    static int CountLossTokens(int[] labels)
    {
        int n = 0;
        for (int i = 1; i < labels.Length; i++) if (labels[i] != Ignore) n++;
        return n;
    }
}

/// <summary>What tokenisation did to a dataset, reported to the user.</summary>
internal sealed record DataStats(int Examples, int Sequences, long Tokens, long TrainableTokens, int Truncated, long TokensCut, int DroppedNoLoss)
{
    public override string ToString() =>
        $"{Examples} examples -> {Sequences} sequences, {Tokens} tokens ({TrainableTokens} with loss); " +
        $"{Truncated} truncated ({TokensCut} tokens cut); {DroppedNoLoss} dropped with nothing to learn after truncation";
}
