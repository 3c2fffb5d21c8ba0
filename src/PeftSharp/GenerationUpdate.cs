namespace PeftSharp;

/// <summary>Why a generation ended, with OpenAI's meanings of <c>finish_reason</c>.</summary>
public enum GenerationFinishReason
{
    /// <summary>"stop": an EOS or stop token id was generated, or a stop sequence appeared in the text.</summary>
    Stop,
    /// <summary>"length": <see cref="GenerationOptions.MaxNewTokens"/> tokens were generated without a stop.</summary>
    Length,
}

/// <summary>
/// One item of <see cref="PeftModel.GenerateUpdates(IReadOnlyList{int}, GenerationOptions?)"/>: a piece of the continuation's text, or (the last item, with
/// empty <see cref="Text"/>) how the generation ended and how many tokens it took.
/// </summary>
public sealed record GenerationUpdate
{
    /// <summary>The text this item adds to the continuation; empty on the last item.</summary>
    public string Text { get; init; } = "";
    /// <summary>Set on the last item only: why generation ended.</summary>
    public GenerationFinishReason? FinishReason { get; init; }
    /// <summary>On the last item: the prompt's token count.</summary>
    public int InputTokens { get; init; }
    /// <summary>
    /// On the last item: the token ids generated, counting the EOS or stop id that ended it and the tokens of a stop
    /// sequence (as OpenAI's <c>completion_tokens</c> counts them), though neither is in the text.
    /// </summary>
    public int OutputTokens { get; init; }
}
