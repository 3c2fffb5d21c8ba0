using System.Globalization;
using System.Text;

namespace PeftSharp.Chat.Jinja;

/// <summary>
/// Python's json.dumps, as transformers' tojson filter calls it (ensure_ascii=False by default, indent, separators,
/// sort_keys): ", " and ": " between items without indent, "," and ": " with it.
/// </summary>
static class JsonText
{
    public static string Dumps(object? v, int? indent = null, (string Item, string Key)? separators = null, bool sortKeys = false, bool ensureAscii = false)
    {
        var seps = separators ?? (indent is null ? (", ", ": ") : (",", ": "));
        var sb = new StringBuilder();
        Write(sb, v, indent, seps, sortKeys, ensureAscii, 0);
        return sb.ToString();
    }

    static void Write(StringBuilder sb, object? v, int? indent, (string Item, string Key) seps, bool sortKeys, bool ascii, int depth)
    {
        switch (v)
        {
            case null: sb.Append("null"); return;
            case Undefined u: throw new JinjaException($"{u.Description}, so it cannot be written as JSON");
            case bool b: sb.Append(b ? "true" : "false"); return;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); return;
            case double d: sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : Values.FloatRepr(d)); return;
            case string s: WriteString(sb, s, ascii); return;
            case List<object?> list:
                WriteContainer(sb, '[', ']', list.Count, indent, seps, depth, i => Write(sb, list[i], indent, seps, sortKeys, ascii, depth + 1));
                return;
            case Dictionary<string, object?> or Namespace:
            {
                var dict = v as Dictionary<string, object?> ?? ((Namespace)v).Attrs;
                var pairs = sortKeys ? dict.OrderBy(p => p.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                WriteContainer(sb, '{', '}', pairs.Count, indent, seps, depth, i =>
                {
                    WriteString(sb, pairs[i].Key, ascii);
                    sb.Append(seps.Key);
                    Write(sb, pairs[i].Value, indent, seps, sortKeys, ascii, depth + 1);
                });
                return;
            }
            default: throw new JinjaException($"Object of type {Values.TypeName(v)} is not JSON serializable");
        }
    }

    static void WriteContainer(StringBuilder sb, char open, char close, int count, int? indent, (string Item, string Key) seps, int depth, Action<int> item)
    {
        sb.Append(open);
        if (count == 0) { sb.Append(close); return; }
        string? inner = indent is int n ? "\n" + new string(' ', n * (depth + 1)) : null;
        for (int i = 0; i < count; i++)
        {
            if (i > 0) sb.Append(seps.Item);
            if (inner is not null) sb.Append(inner);
            item(i);
        }
        if (indent is int m) sb.Append('\n').Append(' ', m * depth);
        sb.Append(close);
    }

    static void WriteString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7e)) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
