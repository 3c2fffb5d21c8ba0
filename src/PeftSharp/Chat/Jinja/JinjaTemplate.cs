using System.Globalization;
using System.Text;

namespace PeftSharp.Chat.Jinja;

/// <summary>
/// A parsed Jinja template, rendered the way transformers renders chat templates: trim_blocks and lstrip_blocks on,
/// loop controls (break/continue) enabled, undefined values printing as "", and the globals transformers adds:
/// raise_exception(message) and strftime_now(format), plus Jinja's range, namespace and dict.
/// Supported: see src/PeftSharp/Chat/README.md. Anything else is a <see cref="JinjaUnsupportedException"/>.
/// </summary>
internal sealed class JinjaTemplate
{
    readonly List<Stmt> _body;

    JinjaTemplate(List<Stmt> body) => _body = body;

    /// <summary>Parses <paramref name="source"/>; syntax errors and unsupported constructs throw <see cref="JinjaException"/>.</summary>
    public static JinjaTemplate Parse(string source) => new(new JinjaParser(JinjaLexer.Tokenize(source)).ParseTemplate());

    /// <summary>
    /// Renders with <paramref name="variables"/> (JSON-like .NET values: null, bool, int/long, double, string,
    /// IEnumerable, IDictionary&lt;string, object?&gt;). <paramref name="now"/> is what strftime_now formats (local time by default).
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> variables, DateTime? now = null)
    {
        var globals = new Scope(null);
        globals.Set("range", new Callable("range", (a, _) => Range(a)));
        globals.Set("namespace", new Callable("namespace", (a, k) =>
            new Namespace(new Dictionary<string, object?>((a.Count > 0 && a[0] is Dictionary<string, object?> d ? d : []).Concat(k)))));
        globals.Set("dict", new Callable("dict", (_, k) => new Dictionary<string, object?>(k)));
        globals.Set("raise_exception", new Callable("raise_exception", (a, _) =>
            throw new JinjaRaisedException(a.Count > 0 ? Values.Str(a[0]) : "raise_exception() was called")));
        var clock = now ?? DateTime.Now;
        globals.Set("strftime_now", new Callable("strftime_now", (a, _) =>
            Strftime(clock, a.Count > 0 && a[0] is string f ? f : throw new JinjaException("strftime_now() needs a format string"))));
        var scope = new Scope(globals);
        foreach (var (k, v) in variables) scope.Set(k, Import(v));
        var output = new StringBuilder();
        new JinjaInterpreter().Exec(_body, scope, output);
        return output.ToString();
    }

    /// <summary>Converts caller values into the interpreter's runtime types.</summary>
    static object? Import(object? v) => v switch
    {
        null or bool or long or double or string => v,
        int i => (long)i,
        float f => (double)f,
        System.Text.Json.Nodes.JsonNode n => Values.FromJson(n),
        IDictionary<string, object?> d => d.ToDictionary(p => p.Key, p => Import(p.Value)),
        IReadOnlyDictionary<string, object?> d => d.ToDictionary(p => p.Key, p => Import(p.Value)),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(Import).ToList(),
        _ => throw new ArgumentException($"cannot pass a {v.GetType().Name} to a template"),
    };

    static List<object?> Range(List<object?> a)
    {
        long Arg(int i) => a[i] as long? ?? throw new JinjaException("range() takes integers");
        var (start, stop, step) = a.Count switch
        {
            1 => (0L, Arg(0), 1L),
            2 => (Arg(0), Arg(1), 1L),
            3 => (Arg(0), Arg(1), Arg(2)),
            _ => throw new JinjaException("range() takes 1 to 3 arguments"),
        };
        if (step == 0) throw new JinjaException("range() step must not be zero");
        var result = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            result.Add(i);
            if (result.Count > 1_000_000) throw new JinjaException("range() too large");
        }
        return result;
    }

    /// <summary>Python's datetime.strftime for the directives templates use (C locale).</summary>
    static string Strftime(DateTime t, string format)
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char c = format[++i];
            bool noPad = c == '-' && i + 1 < format.Length; // glibc's %-d: no zero padding
            if (noPad) c = format[++i];
            string P(int v) => noPad ? v.ToString(ci) : v.ToString("00", ci);
            sb.Append(c switch
            {
                'Y' => t.Year.ToString(ci),
                'y' => (t.Year % 100).ToString("00", ci),
                'm' => P(t.Month),
                'd' => P(t.Day),
                'H' => P(t.Hour),
                'I' => P(t.Hour % 12 == 0 ? 12 : t.Hour % 12),
                'M' => P(t.Minute),
                'S' => P(t.Second),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'b' => t.ToString("MMM", ci),
                'B' => t.ToString("MMMM", ci),
                'a' => t.ToString("ddd", ci),
                'A' => t.ToString("dddd", ci),
                'j' => noPad ? t.DayOfYear.ToString(ci) : t.DayOfYear.ToString("000", ci),
                '%' => "%",
                _ => throw new JinjaUnsupportedException($"strftime directive '%{c}'", 0),
            });
        }
        return sb.ToString();
    }
}
