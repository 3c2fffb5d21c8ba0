using System.Collections.Frozen;
using System.Globalization;
using System.Text;

namespace PeftSharp.Chat.Jinja;

delegate object? FilterFn(object? value, List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>Operators, attribute/item access, filters and tests, with Python's and Jinja's semantics.</summary>
static class JinjaBuiltins
{
    // ---- operators ----

    public static object? BinaryOp(string op, object? a, object? b, int line)
    {
        switch (op)
        {
            case "==": return Values.Equals(a, b);
            case "!=": return !Values.Equals(a, b);
            case "<": return Values.Compare(a, b) < 0;
            case ">": return Values.Compare(a, b) > 0;
            case "<=": return Values.Compare(a, b) <= 0;
            case ">=": return Values.Compare(a, b) >= 0;
            case "in": return Contains(b, a, line);
            case "not in": return !Contains(b, a, line);
            case "~": return Values.Str(a) + Values.Str(b);
        }
        if (a is long x && b is long y)
        {
            switch (op)
            {
                case "+": return x + y;
                case "-": return x - y;
                case "*": return x * y;
                case "/": return (double)x / y;
                case "//": return y == 0 ? throw new JinjaException($"integer division by zero (line {line})") : (long)Math.Floor((double)x / y);
                case "%": return y == 0 ? throw new JinjaException($"modulo by zero (line {line})") : ((x % y) + y) % y;
                case "**": return y >= 0 ? (object)(long)Math.Pow(x, y) : Math.Pow(x, y);
            }
        }
        if (Values.IsNumber(a) && Values.IsNumber(b))
        {
            double p = Values.ToDouble(a), q = Values.ToDouble(b);
            return op switch
            {
                "+" => p + q, "-" => p - q, "*" => p * q, "/" => p / q, "//" => Math.Floor(p / q),
                "%" => p - q * Math.Floor(p / q), "**" => Math.Pow(p, q),
                _ => throw new JinjaException($"unknown operator '{op}' (line {line})"),
            };
        }
        if (op == "+" && a is string s1 && b is string s2) return s1 + s2;
        if (op == "+" && a is List<object?> l1 && b is List<object?> l2) return l1.Concat(l2).ToList();
        if (op == "*" && a is string rs && b is long rn) return string.Concat(Enumerable.Repeat(rs, (int)Math.Max(0, rn)));
        if (op == "*" && a is List<object?> rl && b is long rk) return Enumerable.Repeat(rl, (int)Math.Max(0, rk)).SelectMany(z => z).ToList();
        throw new JinjaException($"unsupported operand types for {op}: '{Values.TypeName(a)}' and '{Values.TypeName(b)}' (line {line})");
    }

    static bool Contains(object? container, object? item, int line) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal)
            : throw new JinjaException($"'in <string>' requires a string as left operand, not {Values.TypeName(item)} (line {line})"),
        List<object?> l => l.Any(x => Values.Equals(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        Namespace ns => item is string k && ns.Attrs.ContainsKey(k),
        Undefined u => throw new JinjaException($"{u.Description} (line {line})"),
        _ => throw new JinjaException($"argument of type '{Values.TypeName(container)}' is not iterable (line {line})"),
    };

    // ---- attributes and items ----

    /// <summary>obj.name: a method of a str/dict, a dict key, a namespace attribute; Undefined when missing.</summary>
    public static object? GetAttribute(object? obj, string name, int line)
    {
        switch (obj)
        {
            case Undefined u: throw new JinjaException($"{u.Description}, so it has no attribute '{name}' (line {line})");
            case string s: return StringMethod(s, name, line);
            case Dictionary<string, object?> d:
                if (DictMethod(d, name) is { } m) return m;
                return d.TryGetValue(name, out var v) ? v : new Undefined($"'dict object' has no attribute '{name}'");
            case Namespace ns: return ns.Attrs.TryGetValue(name, out var nv) ? nv : new Undefined($"namespace has no attribute '{name}'");
            case List<object?> when name is "append" or "pop" or "insert" or "extend" or "remove" or "clear" or "sort" or "reverse":
                throw new JinjaException($"list.{name}() is not allowed: chat templates render in an immutable sandbox (line {line})");
            default: return new Undefined($"'{Values.TypeName(obj)} object' has no attribute '{name}'");
        }
    }

    /// <summary>obj[key]: dict keys (falling back to attributes, as Jinja does), list/string indexes (negative from the end).</summary>
    public static object? GetItem(object? obj, object? key, int line)
    {
        switch (obj)
        {
            case Undefined u: throw new JinjaException($"{u.Description}, so it cannot be indexed (line {line})");
            case Dictionary<string, object?> d when key is string k:
                return d.TryGetValue(k, out var v) ? v : GetAttribute(obj, k, line);
            case List<object?> l when key is long or bool:
            {
                long i = key is bool b ? (b ? 1 : 0) : (long)key;
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : new Undefined($"list index {key} out of range");
            }
            case string s when key is long si:
            {
                var runes = s.EnumerateRunes().ToList();
                if (si < 0) si += runes.Count;
                return si >= 0 && si < runes.Count ? runes[(int)si].ToString() : new Undefined($"string index {key} out of range");
            }
            case Namespace ns when key is string nk:
                return ns.Attrs.TryGetValue(nk, out var nv) ? nv : new Undefined($"namespace has no attribute '{nk}'");
            case not null when key is string attr: return GetAttribute(obj, attr, line);
            default: return new Undefined($"'{Values.TypeName(obj)}' object has no item {Values.Repr(key)}");
        }
    }

    /// <summary>Python slicing obj[start:stop:step] of a list or string.</summary>
    public static object? GetSlice(object? obj, object? start, object? stop, object? step, int line)
    {
        long st = step is null ? 1 : step as long? ?? throw new JinjaException($"slice step must be an integer (line {line})");
        if (st == 0) throw new JinjaException($"slice step cannot be zero (line {line})");
        List<object?> items = obj switch
        {
            List<object?> l => l,
            string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
            Undefined u => throw new JinjaException($"{u.Description}, so it cannot be sliced (line {line})"),
            _ => throw new JinjaException($"'{Values.TypeName(obj)}' object cannot be sliced (line {line})"),
        };
        int n = items.Count;
        long Norm(object? v, long dflt)
        {
            if (v is null) return dflt;
            long i = v as long? ?? throw new JinjaException($"slice indices must be integers (line {line})");
            if (i < 0) i += n;
            return st > 0 ? Math.Clamp(i, 0, n) : Math.Clamp(i, -1, n - 1);
        }
        long a = Norm(start, st > 0 ? 0 : n - 1), b = Norm(stop, st > 0 ? n : -1);
        var result = new List<object?>();
        for (long i = a; st > 0 ? i < b : i > b; i += st) result.Add(items[(int)i]);
        return obj is string ? string.Concat(result.Cast<string>()) : result;
    }

    static Callable? DictMethod(Dictionary<string, object?> d, string name) => name switch
    {
        "items" => new Callable("items", (_, _) => d.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList()),
        "keys" => new Callable("keys", (_, _) => d.Keys.Select(k => (object?)k).ToList()),
        "values" => new Callable("values", (_, _) => d.Values.ToList()),
        "get" => new Callable("get", (a, _) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null),
        _ => null,
    };

    static Callable StringMethod(string s, string name, int line)
    {
        string Arg(List<object?> a, int i, string what) => a.Count > i && a[i] is string x ? x
            : throw new JinjaException($"str.{name}() needs a string {what} (line {line})");
        string? Chars(List<object?> a) => a.Count > 0 && a[0] is string c ? c : null;
        return name switch
        {
            "strip" => new(name, (a, _) => Chars(a) is { } c ? s.Trim(c.ToCharArray()) : PyStrip(s, true, true)),
            "lstrip" => new(name, (a, _) => Chars(a) is { } c ? s.TrimStart(c.ToCharArray()) : PyStrip(s, true, false)),
            "rstrip" => new(name, (a, _) => Chars(a) is { } c ? s.TrimEnd(c.ToCharArray()) : PyStrip(s, false, true)),
            "upper" => new(name, (_, _) => s.ToUpperInvariant()),
            "lower" => new(name, (_, _) => s.ToLowerInvariant()),
            "title" => new(name, (_, _) => Title(s)),
            "capitalize" => new(name, (_, _) => Capitalize(s)),
            "startswith" => new(name, (a, _) => Affixes(a, name, line).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
            "endswith" => new(name, (a, _) => Affixes(a, name, line).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
            "split" => new(name, (a, k) => Split(s, a.Count > 0 ? a[0] : k.GetValueOrDefault("sep"), a.Count > 1 ? a[1] : k.GetValueOrDefault("maxsplit"), line)),
            "splitlines" => new(name, (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).SkipLast(s.EndsWith('\n') ? 1 : 0).ToList()),
            "replace" => new(name, (a, _) => Replace(s, Arg(a, 0, "old"), Arg(a, 1, "new"), a.Count > 2 ? a[2] as long? : null)),
            "count" => new(name, (a, _) => (long)CountOf(s, Arg(a, 0, "substring"))),
            "find" => new(name, (a, _) => (long)s.IndexOf(Arg(a, 0, "substring"), StringComparison.Ordinal)),
            "rfind" => new(name, (a, _) => (long)s.LastIndexOf(Arg(a, 0, "substring"), StringComparison.Ordinal)),
            "join" => new(name, (a, _) => string.Join(s, Values.Iterate(a.Count > 0 ? a[0] : null).Select(Values.Str))),
            "isdigit" => new(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
            "isalpha" => new(name, (_, _) => s.Length > 0 && s.All(char.IsLetter)),
            "isspace" => new(name, (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace)),
            "islower" => new(name, (_, _) => s.Any(char.IsLetter) && s.ToLowerInvariant() == s),
            "isupper" => new(name, (_, _) => s.Any(char.IsLetter) && s.ToUpperInvariant() == s),
            "format" => new(name, (a, _) => Format(s, a, line)),
            _ => throw new JinjaUnsupportedException($"string method '.{name}()'", line),
        };
    }

    static IEnumerable<string> Affixes(List<object?> a, string name, int line) => a.Count > 0 && a[0] is string p ? [p]
        : a.Count > 0 && a[0] is List<object?> l ? l.Select(x => x as string ?? throw new JinjaException($"str.{name}() takes strings (line {line})"))
        : throw new JinjaException($"str.{name}() needs a string argument (line {line})");

    static bool IsPyWhitespace(char c) => char.IsWhiteSpace(c) || c is '\x1c' or '\x1d' or '\x1e' or '\x1f';

    static string PyStrip(string s, bool left, bool right)
    {
        int a = 0, b = s.Length;
        if (left) while (a < b && IsPyWhitespace(s[a])) a++;
        if (right) while (b > a && IsPyWhitespace(s[b - 1])) b--;
        return s[a..b];
    }

    static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            sb.Append(prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            prevCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    static int CountOf(string s, string sub)
    {
        if (sub.Length == 0) return s.Length + 1;
        int n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    static string Replace(string s, string old, string @new, long? count)
    {
        if (count is null or < 0) return old.Length == 0 ? string.Join(@new, s.EnumerateRunes().Select(r => r.ToString()).Prepend("").Append("")) : s.Replace(old, @new, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int pos = 0;
        for (long k = 0; k < count; k++)
        {
            int i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0 || old.Length == 0) break;
            sb.Append(s, pos, i - pos).Append(@new);
            pos = i + old.Length;
        }
        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    /// <summary>Python's str.split: on runs of whitespace (dropping empty parts) when sep is None, else on sep exactly.</summary>
    static List<object?> Split(string s, object? sep, object? maxsplit, int line)
    {
        long max = maxsplit as long? ?? -1;
        var parts = new List<object?>();
        if (sep is null)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && IsPyWhitespace(s[i])) i++;
                if (i >= s.Length) break;
                if (max >= 0 && parts.Count == max) { parts.Add(PyStrip(s[i..], false, true)); break; }
                int j = i;
                while (j < s.Length && !IsPyWhitespace(s[j])) j++;
                parts.Add(s[i..j]);
                i = j;
            }
            return parts;
        }
        if (sep is not string sp || sp.Length == 0) throw new JinjaException($"str.split() separator must be a non-empty string (line {line})");
        int pos = 0;
        while (max < 0 || parts.Count < max)
        {
            int k = s.IndexOf(sp, pos, StringComparison.Ordinal);
            if (k < 0) break;
            parts.Add(s[pos..k]);
            pos = k + sp.Length;
        }
        parts.Add(s[pos..]);
        return parts;
    }

    /// <summary>str.format with "{}" and "{0}" fields (no format specs).</summary>
    static string Format(string s, List<object?> args, int line)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '{' && i + 1 < s.Length && s[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (s[i] == '}' && i + 1 < s.Length && s[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (s[i] != '{') { sb.Append(s[i]); continue; }
            int close = s.IndexOf('}', i);
            if (close < 0) throw new JinjaException($"str.format(): unmatched '{{' (line {line})");
            string field = s[(i + 1)..close];
            int idx = field.Length == 0 ? auto++ : int.TryParse(field, out int f) ? f
                : throw new JinjaUnsupportedException($"str.format() field '{{{field}}}'", line);
            if (idx >= args.Count) throw new JinjaException($"str.format(): no argument {idx} (line {line})");
            sb.Append(Values.Str(args[idx]));
            i = close;
        }
        return sb.ToString();
    }

    // ---- filters ----

    static object? Kw(List<object?> args, Dictionary<string, object?> kwargs, int index, string name, object? dflt) =>
        index < args.Count ? args[index] : kwargs.TryGetValue(name, out var v) ? v : dflt;

    /// <summary>The filters by name; built once and immutable (no registry a caller could change under a running template).</summary>
    public static readonly FrozenDictionary<string, FilterFn> Filters = new Dictionary<string, FilterFn>
    {
        ["abs"] = (v, _, _) => v switch { long l => (object)Math.Abs(l), double d => Math.Abs(d), _ => throw new JinjaException($"abs of {Values.TypeName(v)}") },
        ["attr"] = (v, a, _) => GetAttribute(v, a.Count > 0 && a[0] is string n ? n : throw new JinjaException("attr needs a name"), 0),
        ["capitalize"] = (v, _, _) => Capitalize(Values.Str(v)),
        ["count"] = (v, _, _) => Length(v),
        ["default"] = Default,
        ["d"] = Default,
        ["first"] = (v, _, _) => Values.Iterate(v) is { Count: > 0 } l ? l[0] : new Undefined("first of an empty sequence"),
        ["last"] = (v, _, _) => Values.Iterate(v) is { Count: > 0 } l ? l[^1] : new Undefined("last of an empty sequence"),
        ["float"] = (v, a, k) => v switch
        {
            double d => d, long l => (double)l, bool b => b ? 1.0 : 0.0,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
            _ => Kw(a, k, 0, "default", 0.0),
        },
        ["int"] = (v, a, k) => v switch
        {
            long l => l, double d => (long)Math.Truncate(d), bool b => b ? 1L : 0L,
            string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) => l,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => (long)Math.Truncate(d),
            _ => Kw(a, k, 0, "default", 0L),
        },
        ["items"] = (v, _, _) => v switch
        {
            Dictionary<string, object?> d => d.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList(),
            Undefined => new List<object?>(),
            _ => throw new JinjaException($"items expects a mapping, got {Values.TypeName(v)}"),
        },
        ["join"] = (v, a, k) =>
        {
            string sep = Values.Str(Kw(a, k, 0, "d", ""));
            var items = Values.Iterate(v);
            if (Kw(a, k, 1, "attribute", null) is string attr) items = items.Select(x => GetAttributePath(x, attr)).ToList();
            return string.Join(sep, items.Select(Values.Str));
        },
        ["length"] = (v, _, _) => Length(v),
        ["list"] = (v, _, _) => Values.Iterate(v).ToList(),
        ["lower"] = (v, _, _) => Values.Str(v).ToLowerInvariant(),
        ["upper"] = (v, _, _) => Values.Str(v).ToUpperInvariant(),
        ["title"] = (v, _, _) => Title(Values.Str(v)),
        ["trim"] = (v, a, k) => Kw(a, k, 0, "chars", null) is string c ? Values.Str(v).Trim(c.ToCharArray()) : PyStrip(Values.Str(v), true, true),
        ["replace"] = (v, a, k) => Replace(Values.Str(v), Values.Str(Kw(a, k, 0, "old", "")), Values.Str(Kw(a, k, 1, "new", "")), Kw(a, k, 2, "count", null) as long?),
        ["reverse"] = (v, _, _) => v is string s ? new string(s.Reverse().ToArray()) : Values.Iterate(v).AsEnumerable().Reverse().ToList(),
        ["round"] = (v, a, k) =>
        {
            int digits = (int)(Kw(a, k, 0, "precision", 0L) as long? ?? 0);
            string method = Kw(a, k, 1, "method", "common") as string ?? "common";
            double x = Values.ToDouble(v), f = Math.Pow(10, digits);
            return method switch { "ceil" => Math.Ceiling(x * f) / f, "floor" => Math.Floor(x * f) / f, _ => Math.Round(x * f, MidpointRounding.AwayFromZero) / f };
        },
        ["safe"] = (v, _, _) => v,
        ["string"] = (v, _, _) => Values.Str(v),
        ["map"] = (v, a, k) =>
        {
            var items = Values.Iterate(v);
            if (k.TryGetValue("attribute", out var attr))
                return items.Select(x => GetAttributePath(x, Values.Str(attr)) is Undefined && k.TryGetValue("default", out var d) ? d : GetAttributePath(x, Values.Str(attr))).ToList();
            if (a.Count > 0 && a[0] is string f)
            {
                var filterArgs = a.Skip(1).ToList();
                return items.Select(x => ApplyFilter(f, x, filterArgs, [], 0)).ToList();
            }
            throw new JinjaException("map needs attribute= or a filter name");
        },
        ["select"] = (v, a, _) => SelectBy(v, a, 0, keep: true, attribute: false),
        ["reject"] = (v, a, _) => SelectBy(v, a, 0, keep: false, attribute: false),
        ["selectattr"] = (v, a, _) => SelectBy(v, a, 0, keep: true, attribute: true),
        ["rejectattr"] = (v, a, _) => SelectBy(v, a, 0, keep: false, attribute: true),
        ["tojson"] = (v, a, k) =>
        {
            var indentArg = Kw(a, k, 0, "indent", null);
            int? indent = indentArg is long n ? (int)n : null;
            var seps = k.GetValueOrDefault("separators") as List<object?>;
            bool sortKeys = Values.Truthy(k.GetValueOrDefault("sort_keys"));
            bool ensureAscii = Values.Truthy(k.GetValueOrDefault("ensure_ascii"));
            return JsonText.Dumps(v, indent, seps is { Count: 2 } ? (Values.Str(seps[0]), Values.Str(seps[1])) : null, sortKeys, ensureAscii);
        },
        ["unique"] = (v, _, _) =>
        {
            var result = new List<object?>();
            foreach (var x in Values.Iterate(v)) if (!result.Any(r => Values.Equals(r, x))) result.Add(x);
            return result;
        },
        ["sort"] = (v, a, k) =>
        {
            bool reverse = Values.Truthy(Kw(a, k, 0, "reverse", false));
            bool caseSensitive = Values.Truthy(Kw(a, k, 1, "case_sensitive", false));
            var attr = Kw(a, k, 2, "attribute", null) as string;
            var items = Values.Iterate(v).ToList();
            Comparison<object?> cmp = (x, y) => Values.Compare(attr is null ? x : GetAttributePath(x, attr), attr is null ? y : GetAttributePath(y, attr), caseSensitive);
            var sorted = items.Order(Comparer<object?>.Create(cmp)).ToList(); // stable, like Python's sort
            if (reverse) sorted.Reverse();
            return sorted;
        },
        ["sum"] = (v, a, k) =>
        {
            object? total = Kw(a, k, 1, "start", 0L);
            var attr = Kw(a, k, 0, "attribute", null) as string;
            foreach (var x in Values.Iterate(v)) total = BinaryOp("+", total, attr is null ? x : GetAttributePath(x, attr), 0);
            return total;
        },
        ["min"] = (v, _, _) => Values.Iterate(v) is { Count: > 0 } l ? l.Aggregate((x, y) => Values.Compare(y, x, false) < 0 ? y : x) : new Undefined("min of an empty sequence"),
        ["max"] = (v, _, _) => Values.Iterate(v) is { Count: > 0 } l ? l.Aggregate((x, y) => Values.Compare(y, x, false) > 0 ? y : x) : new Undefined("max of an empty sequence"),
        ["indent"] = (v, a, k) =>
        {
            var w = Kw(a, k, 0, "width", 4L);
            string pad = w is string ws ? ws : new string(' ', (int)(w as long? ?? 4));
            bool first = Values.Truthy(Kw(a, k, 1, "first", false)), blank = Values.Truthy(Kw(a, k, 2, "blank", false));
            var lines = Values.Str(v).Split('\n');
            for (int i = 0; i < lines.Length; i++)
                if ((i > 0 || first) && (blank || lines[i].Trim().Length > 0)) lines[i] = pad + lines[i];
            return string.Join("\n", lines);
        },
        ["wordcount"] = (v, _, _) => (long)Split(Values.Str(v), null, null, 0).Count,
        ["dictsort"] = (v, _, _) => v is Dictionary<string, object?> d
            ? d.OrderBy(p => p.Key.ToLowerInvariant(), StringComparer.Ordinal).Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList()
            : throw new JinjaException($"dictsort expects a mapping, got {Values.TypeName(v)}"),
    }.ToFrozenDictionary();

    static object? Default(object? v, List<object?> a, Dictionary<string, object?> k)
    {
        bool boolean = Values.Truthy(Kw(a, k, 1, "boolean", false));
        return v is Undefined || (boolean && !Values.Truthy(v)) ? Kw(a, k, 0, "default_value", "") : v;
    }

    static long Length(object? v) => v switch
    {
        string s => s.EnumerateRunes().Count(),
        List<object?> l => l.Count,
        Dictionary<string, object?> d => d.Count,
        Undefined => 0,
        _ => throw new JinjaException($"object of type '{Values.TypeName(v)}' has no len()"),
    };

    /// <summary>"a.b" attribute paths as selectattr/map/sort use them; numeric parts index lists.</summary>
    static object? GetAttributePath(object? obj, string path)
    {
        foreach (var part in path.Split('.'))
        {
            if (obj is Undefined) return obj;
            obj = long.TryParse(part, out long i) ? GetItem(obj, i, 0) : GetItem(obj, part, 0);
        }
        return obj;
    }

    static List<object?> SelectBy(object? v, List<object?> a, int line, bool keep, bool attribute)
    {
        int k = 0;
        string? attr = null;
        if (attribute) attr = a.Count > 0 && a[0] is string s ? s : throw new JinjaException("selectattr/rejectattr need an attribute name");
        if (attribute) k = 1;
        string? test = a.Count > k ? a[k] as string : null;
        var testArgs = a.Skip(k + 1).ToList();
        return Values.Iterate(v).Where(item =>
        {
            var x = attr is null ? item : GetAttributePath(item, attr);
            bool pass = test is null ? Values.Truthy(x) : ApplyTest(test, x, testArgs, line);
            return pass == keep;
        }).ToList();
    }

    public static object? ApplyFilter(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs, int line)
    {
        if (!Filters.TryGetValue(name, out var f)) throw new JinjaUnsupportedException($"filter '|{name}'", line);
        try { return f(value, args, kwargs); }
        catch (JinjaException e) when (line > 0 && !e.Message.Contains("(line ") && e is not JinjaRaisedException)
        { throw new JinjaException($"{e.Message} (filter '|{name}', line {line})"); }
    }

    // ---- tests ----

    /// <summary>The tests (`is NAME`) by name; built once and immutable, as <see cref="Filters"/>.</summary>
    public static readonly FrozenDictionary<string, Func<object?, List<object?>, bool>> Tests = new Dictionary<string, Func<object?, List<object?>, bool>>
    {
        ["defined"] = (v, _) => v is not Undefined,
        ["undefined"] = (v, _) => v is Undefined,
        ["none"] = (v, _) => v is null,
        ["string"] = (v, _) => v is string,
        ["mapping"] = (v, _) => v is Dictionary<string, object?>,
        ["iterable"] = (v, _) => v is string or List<object?> or Dictionary<string, object?>,
        ["sequence"] = (v, _) => v is string or List<object?> or Dictionary<string, object?>,
        ["number"] = (v, _) => v is long or double,
        ["integer"] = (v, _) => v is long,
        ["float"] = (v, _) => v is double,
        ["boolean"] = (v, _) => v is bool,
        ["true"] = (v, _) => v is true,
        ["false"] = (v, _) => v is false,
        ["callable"] = (v, _) => v is Callable,
        ["odd"] = (v, _) => v is long l && l % 2 != 0,
        ["even"] = (v, _) => v is long l && l % 2 == 0,
        ["divisibleby"] = (v, a) => a.Count > 0 && a[0] is long d && d != 0 && v is long l && l % d == 0,
        ["eq"] = (v, a) => a.Count > 0 && Values.Equals(v, a[0]),
        ["equalto"] = (v, a) => a.Count > 0 && Values.Equals(v, a[0]),
        ["=="] = (v, a) => a.Count > 0 && Values.Equals(v, a[0]),
        ["ne"] = (v, a) => a.Count > 0 && !Values.Equals(v, a[0]),
        ["!="] = (v, a) => a.Count > 0 && !Values.Equals(v, a[0]),
        ["lt"] = (v, a) => a.Count > 0 && Values.Compare(v, a[0]) < 0,
        ["le"] = (v, a) => a.Count > 0 && Values.Compare(v, a[0]) <= 0,
        ["gt"] = (v, a) => a.Count > 0 && Values.Compare(v, a[0]) > 0,
        ["ge"] = (v, a) => a.Count > 0 && Values.Compare(v, a[0]) >= 0,
        ["in"] = (v, a) => a.Count > 0 && Contains(a[0], v, 0),
        ["lower"] = (v, _) => v is string s && s.ToLowerInvariant() == s,
        ["upper"] = (v, _) => v is string s && s.ToUpperInvariant() == s,
        ["sameas"] = (v, a) => a.Count > 0 && (v is null && a[0] is null || v is bool b && a[0] is bool c && b == c || ReferenceEquals(v, a[0])),
    }.ToFrozenDictionary();

    public static bool ApplyTest(string name, object? value, List<object?> args, int line) =>
        Tests.TryGetValue(name, out var t) ? t(value, args) : throw new JinjaUnsupportedException($"test 'is {name}'", line);
}
