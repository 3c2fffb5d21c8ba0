using System.Globalization;
using System.Text;

namespace PeftSharp.Chat.Jinja;

// Runtime values are plain .NET objects: null (None), bool, long, double, string, List<object?> (lists and tuples),
// Dictionary<string, object?> (dicts; insertion-ordered as long as nothing is removed, and templates cannot remove),
// and the classes below. Semantics follow Python's, as Jinja's do.

/// <summary>Jinja's Undefined: prints as "", is false, iterates as empty; reading an attribute of it is an error.</summary>
sealed class Undefined(string description)
{
    public string Description { get; } = description;
}

/// <summary>The object namespace(...) returns: attributes that "set ns.x = ..." may change from inside a loop.</summary>
sealed class Namespace(Dictionary<string, object?> attrs)
{
    public Dictionary<string, object?> Attrs { get; } = attrs;
}

/// <summary>A callable value: a global (range, namespace, raise_exception, ...), a bound method, or a macro.</summary>
sealed class Callable(string name, Func<List<object?>, Dictionary<string, object?>, object?> invoke)
{
    public string Name { get; } = name;
    public object? Invoke(List<object?> args, Dictionary<string, object?> kwargs) => invoke(args, kwargs);
}

static class Values
{
    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        Namespace => "Namespace",
        Callable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>Python's str(): what {{ value }} prints.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's repr(), used inside printed lists and dicts.</summary>
    public static string Repr(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        string s => StringRepr(s),
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(p => StringRepr(p.Key) + ": " + Repr(p.Value))) + "}",
        Namespace => "<Namespace>",
        Callable c => $"<function {c.Name}>",
        _ => v.ToString() ?? "",
    };

    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == Math.Floor(d) && Math.Abs(d) < 1e16) return d.ToString("F1", CultureInfo.InvariantCulture);
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E');
        if (e < 0) return r;
        int exp = int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        return r[..e] + "e" + (exp < 0 ? "-" : "+") + Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture);
    }

    static string StringRepr(string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(q);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == q) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append($"\\x{(int)c:x2}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(q).ToString();
    }

    public static bool IsNumber(object? v) => v is long or double;
    public static double ToDouble(object? v) => v switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => throw new JinjaException($"expected a number, got {TypeName(v)}") };

    public static new bool Equals(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (Undefined, Undefined) => true,
        (null or Undefined, _) or (_, null or Undefined) => false,
        (long x, long y) => x == y,
        (bool x, bool y) => x == y,
        (bool, _) or (_, bool) => false,
        (long or double, long or double) => ToDouble(a) == ToDouble(b),
        (string x, string y) => x == y,
        (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Equals(p.First, p.Second)),
        (Dictionary<string, object?> x, Dictionary<string, object?> y) =>
            x.Count == y.Count && x.All(p => y.TryGetValue(p.Key, out var o) && Equals(p.Value, o)),
        _ => ReferenceEquals(a, b),
    };

    public static int Compare(object? a, object? b, bool caseSensitive = true) => (a, b) switch
    {
        (long or double or bool, long or double or bool) => ToDouble(a).CompareTo(ToDouble(b)),
        (string x, string y) => caseSensitive ? string.CompareOrdinal(x, y) : string.CompareOrdinal(x.ToLowerInvariant(), y.ToLowerInvariant()),
        (List<object?> x, List<object?> y) => CompareLists(x, y, caseSensitive),
        _ => throw new JinjaException($"'<' not supported between {TypeName(a)} and {TypeName(b)}"),
    };

    static int CompareLists(List<object?> x, List<object?> y, bool caseSensitive)
    {
        for (int i = 0; i < Math.Min(x.Count, y.Count); i++)
        {
            int c = Compare(x[i], y[i], caseSensitive);
            if (c != 0) return c;
        }
        return x.Count.CompareTo(y.Count);
    }

    /// <summary>What "for x in value" iterates: list items, dict keys, string characters; nothing for Undefined.</summary>
    public static List<object?> Iterate(object? v) => v switch
    {
        Undefined => [],
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Select(k => (object?)k).ToList(),
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
        _ => throw new JinjaException($"'{TypeName(v)}' object is not iterable"),
    };

    /// <summary>JSON text of a JSON node, as a runtime value (objects keep their key order).</summary>
    public static object? FromJson(System.Text.Json.Nodes.JsonNode? node) => node switch
    {
        null => null,
        System.Text.Json.Nodes.JsonObject o => o.ToDictionary(p => p.Key, p => FromJson(p.Value)),
        System.Text.Json.Nodes.JsonArray a => a.Select(FromJson).ToList(),
        System.Text.Json.Nodes.JsonValue v => v.GetValueKind() switch
        {
            System.Text.Json.JsonValueKind.String => v.GetValue<string>(),
            System.Text.Json.JsonValueKind.True => true,
            System.Text.Json.JsonValueKind.False => false,
            System.Text.Json.JsonValueKind.Number => v.TryGetValue<long>(out long l) ? l : v.GetValue<double>(),
            _ => null,
        },
        _ => null,
    };
}
