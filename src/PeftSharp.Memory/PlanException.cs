namespace PeftSharp.Memory;

/// <summary>An invalid model config or plan request. The message names the offending field.</summary>
public sealed class PlanException(string field, string message) : ArgumentException($"{field}: {message}", field)
{
    public string Field { get; } = field;
}
