using System.Text;
using System.Text.Json.Nodes;

namespace PeftSharp.Serving.Dashboard;

/// <summary>
/// What was appended to a metrics.jsonl since byte <c>Offset</c> (line <c>Line</c>), up to its last complete line;
/// <c>More</c>: the read stopped at its size limit, so the file holds more to read from <c>Offset</c> at once.
/// </summary>
internal sealed record MetricsChunk(IReadOnlyList<JsonObject> Records, long Offset, int Line, bool Reset, bool More = false);

/// <summary>
/// Tails a metrics.jsonl that a running `peft train` appends to: the caller keeps the byte offset and line number it has
/// read up to, and gets the complete lines after them. A line without its newline is still being written and is left for
/// the next read. A file shorter than the offset was rewritten (--overwrite, or a resume dropping the steps after its
/// checkpoint): it is read again from the start, with <c>Reset</c> set. One read takes at most <see cref="MaxChunkBytes"/>
/// (a long run's file, opened by a fresh page, is sent in pieces rather than held and sent whole).
/// </summary>
internal static class MetricsTail
{
    /// <summary>The most one read takes from the file; `peft train` writes lines of a few KB.</summary>
    public const int MaxChunkBytes = 4 << 20;

    public static MetricsChunk Read(string path, long offset, int line, int maxBytes = MaxChunkBytes)
    {
        if (!File.Exists(path)) return new([], 0, 0, Reset: offset > 0);
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        bool reset = f.Length < offset || offset < 0;
        if (reset) { offset = 0; line = 0; }
        f.Seek(offset, SeekOrigin.Begin);
        long available = f.Length - offset;
        var bytes = new byte[(int)Math.Min(available, maxBytes)];
        f.ReadExactly(bytes);
        bool more = bytes.Length < available;
        int end = Array.LastIndexOf(bytes, (byte)'\n') + 1;   // complete lines only
        if (end == 0 && more) throw new InvalidDataException($"{path} line {line + 1}: longer than {maxBytes} bytes, not a metrics record");
        var records = new List<JsonObject>();
        foreach (var text in Encoding.UTF8.GetString(bytes, 0, end).Split('\n').SkipLast(1))
        {
            line++;
            if (text.Length == 0) continue;
            records.Add(Parse(path, line, text));
        }
        return new(records, offset + end, line, reset, more);
    }

    static JsonObject Parse(string path, int line, string text)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(text); }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{path} line {line}: not JSON ({e.Message.Split('.')[0]})"); }
        // The step must be a whole number: the page draws it into SVG markup, so a string there would be markup.
        if (node is not JsonObject o || o["step"] is not JsonValue step || !step.TryGetValue<int>(out _))
            throw new InvalidDataException($"{path} line {line}: not a metrics record (a JSON object with a whole-number \"step\")");
        return o;
    }
}
