namespace PeftSharp.Memory;

/// <summary>An invalid model config or plan request. The message starts with the offending field.</summary>
/// <param name="field">The config.json key, request field (snake_case, as `peft plan --json` names it) or file at fault.</param>
/// <param name="message">What is wrong with it.</param>
public sealed class PlanException(string field, string message) : ArgumentException($"{field}: {message}", field)
{
    /// <summary>The config.json key, request field or file at fault (e.g. <c>hidden_size</c>, <c>rank</c>, <c>model</c>).</summary>
    public string Field { get; } = field;
    /// <summary>The message without the field.</summary>
    public string Reason { get; } = message;

    /// <summary>Without ArgumentException's " (Parameter 'x')" suffix: the field already leads the message.</summary>
    public override string Message => $"{Field}: {Reason}";
}
