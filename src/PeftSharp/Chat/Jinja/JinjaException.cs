namespace PeftSharp.Chat.Jinja;

/// <summary>A template that cannot be parsed or rendered: syntax error, unsupported construct, or a runtime error.</summary>
public class JinjaException(string message) : Exception(message);

/// <summary>The template uses Jinja syntax, a filter, test or method this interpreter does not implement.</summary>
public sealed class JinjaUnsupportedException(string construct, int line)
    : JinjaException($"unsupported Jinja construct {construct} (line {line})")
{
    /// <summary>The construct named in the message, e.g. "filter 'wordcount'".</summary>
    public string Construct { get; } = construct;
}

/// <summary>The template called raise_exception(message), e.g. "Conversation roles must alternate user/assistant/...".</summary>
public sealed class JinjaRaisedException(string message) : JinjaException(message);
