namespace PeftSharp.Data;

/// <summary>
/// Token ids and their labels, aligned (Hugging Face convention): Labels[i] is Ids[i] where the loss applies and
/// <see cref="Ignore"/> (-100) elsewhere. The shift to next-token targets happens in the loss.
/// </summary>
public sealed record TokenSequence(int[] Ids, int[] Labels)
{
    public const int Ignore = -100;
    public int Length => Ids.Length;
}

/// <summary>What tokenisation did to a dataset, reported to the user.</summary>
public sealed record DataStats(int Examples, int Sequences, long Tokens, long TrainableTokens, int Truncated, long TokensCut, int DroppedNoLoss)
{
    public override string ToString() =>
        $"{Examples} examples -> {Sequences} sequences, {Tokens} tokens ({TrainableTokens} with loss); " +
        $"{Truncated} truncated ({TokensCut} tokens cut); {DroppedNoLoss} dropped with nothing to learn after truncation";
}
