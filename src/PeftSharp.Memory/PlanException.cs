namespace PeftSharp.Memory;

/// <summary>An invalid model config or plan request. The message starts with the offending field.</summary>
public sealed class PlanException(string field, string message) : ArgumentException($"{field}: {message}", field)
{
    public string Field { get; } = field;
    /// <summary>The message without the field.</summary>
    public string Reason { get; } = message;

    /// <summary>Without ArgumentException's " (Parameter 'x')" suffix: the field already leads the message.</summary>
    public override string Message => $"{Field}: {Reason}";
}
