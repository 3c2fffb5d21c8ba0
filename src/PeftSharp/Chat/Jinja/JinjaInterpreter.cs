using System.Text;

namespace PeftSharp.Chat.Jinja;

/// <summary>Variables of one frame; lookups fall back to the enclosing frame (loop bodies and macros see outer ones).</summary>
sealed class Scope(Scope? parent)
{
    readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);
    public Scope? Parent { get; } = parent;

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s._vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

enum Flow { Normal, Break, Continue }

/// <summary>
/// Executes a parsed template. Scoping is Jinja's: "set" inside a for loop does not leak out of it (templates use
/// namespace() for that), "if" opens no scope, a macro sees the frame it was defined in.
/// </summary>
sealed class JinjaInterpreter
{
    public Flow Exec(List<Stmt> body, Scope scope, StringBuilder output)
    {
        foreach (var s in body)
        {
            var flow = Exec(s, scope, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    Flow Exec(Stmt stmt, Scope scope, StringBuilder output)
    {
        switch (stmt)
        {
            case TextStmt t: output.Append(t.Text); return Flow.Normal;
            case Output o: output.Append(Values.Str(Eval(o.Value, scope))); return Flow.Normal;
            case IfStmt i: return Exec(Values.Truthy(Eval(i.Test, scope)) ? i.Then : i.Else, scope, output);
            case ForStmt f: ExecFor(f, scope, output); return Flow.Normal;
            case SetStmt s: ExecSet(s, scope); return Flow.Normal;
            case MacroStmt m: scope.Set(m.MacroName, MakeMacro(m, scope)); return Flow.Normal;
            case BreakStmt: return Flow.Break;
            case ContinueStmt: return Flow.Continue;
            case FilterBlock fb:
            {
                var inner = new StringBuilder();
                Exec(fb.Body, scope, inner);
                output.Append(Values.Str(JinjaBuiltins.ApplyFilter(fb.FilterName, inner.ToString(), fb.Args.Select(a => Eval(a, scope)).ToList(), [], fb.Line)));
                return Flow.Normal;
            }
            default: throw new JinjaUnsupportedException(stmt.GetType().Name, stmt.Line);
        }
    }

    void ExecFor(ForStmt f, Scope scope, StringBuilder output)
    {
        var items = Values.Iterate(Eval(f.Iterable, scope));
        if (f.Filter is not null)
            items = items.Where(item => Values.Truthy(Eval(f.Filter, Bind(f, item, new Scope(scope))))).ToList();
        if (items.Count == 0) { Exec(f.Else, scope, output); return; }
        for (int i = 0; i < items.Count; i++)
        {
            var frame = Bind(f, items[i], new Scope(scope));
            frame.Set("loop", LoopObject(items, i));
            if (Exec(f.Body, frame, output) == Flow.Break) break;
        }
    }

    static Scope Bind(ForStmt f, object? item, Scope frame)
    {
        if (f.Targets.Count == 1) { frame.Set(f.Targets[0], item); return frame; }
        var parts = Values.Iterate(item);
        if (parts.Count != f.Targets.Count)
            throw new JinjaException($"cannot unpack {parts.Count} values into {f.Targets.Count} loop variables (line {f.Line})");
        for (int k = 0; k < parts.Count; k++) frame.Set(f.Targets[k], parts[k]);
        return frame;
    }

    static Dictionary<string, object?> LoopObject(List<object?> items, int i)
    {
        int n = items.Count;
        return new()
        {
            ["index"] = (long)i + 1, ["index0"] = (long)i, ["revindex"] = (long)(n - i), ["revindex0"] = (long)(n - i - 1),
            ["first"] = i == 0, ["last"] = i == n - 1, ["length"] = (long)n, ["depth"] = 1L, ["depth0"] = 0L,
            ["previtem"] = i > 0 ? items[i - 1] : new Undefined("there is no previous item"),
            ["nextitem"] = i < n - 1 ? items[i + 1] : new Undefined("there is no next item"),
            ["cycle"] = new Callable("loop.cycle", (args, _) =>
                args.Count == 0 ? throw new JinjaException("loop.cycle() needs at least one argument") : args[i % args.Count]),
        };
    }

    void ExecSet(SetStmt s, Scope scope)
    {
        object? value;
        if (s.Body is not null)
        {
            var inner = new StringBuilder();
            Exec(s.Body, scope, inner);
            value = inner.ToString();
        }
        else value = Eval(s.Value!, scope);

        if (s.Attr is not null)
        {
            if (!scope.TryGet(s.Targets[0], out var target) || target is not Namespace ns)
                throw new JinjaException($"cannot set '{s.Targets[0]}.{s.Attr}': '{s.Targets[0]}' is not a namespace() (line {s.Line})");
            ns.Attrs[s.Attr] = value;
            return;
        }
        if (s.Targets.Count == 1) { scope.Set(s.Targets[0], value); return; }
        var parts = Values.Iterate(value);
        if (parts.Count != s.Targets.Count)
            throw new JinjaException($"cannot unpack {parts.Count} values into {s.Targets.Count} names (line {s.Line})");
        for (int k = 0; k < parts.Count; k++) scope.Set(s.Targets[k], parts[k]);
    }

    Callable MakeMacro(MacroStmt m, Scope definedIn) => new(m.MacroName, (args, kwargs) =>
    {
        if (args.Count > m.Params.Count)
            throw new JinjaException($"macro '{m.MacroName}' takes {m.Params.Count} arguments, got {args.Count} (line {m.Line})");
        var frame = new Scope(definedIn);
        for (int k = 0; k < m.Params.Count; k++)
        {
            var (name, def) = m.Params[k];
            frame.Set(name, k < args.Count ? args[k]
                : kwargs.TryGetValue(name, out var kv) ? kv
                : def is not null ? Eval(def, frame) : new Undefined($"macro parameter '{name}' was not given"));
        }
        foreach (var key in kwargs.Keys)
            if (!m.Params.Any(p => p.Name == key)) throw new JinjaException($"macro '{m.MacroName}' has no parameter '{key}' (line {m.Line})");
        var output = new StringBuilder();
        Exec(m.Body, frame, output);
        return output.ToString();
    });

    public object? Eval(Expr e, Scope scope)
    {
        switch (e)
        {
            case Literal l: return l.Value;
            case Name n: return scope.TryGet(n.Id, out var v) ? v : new Undefined($"'{n.Id}' is undefined");
            case ListExpr l: return l.Items.Select(x => Eval(x, scope)).ToList();
            case DictExpr d:
            {
                var dict = new Dictionary<string, object?>();
                foreach (var (k, val) in d.Items)
                    dict[Eval(k, scope) as string ?? throw new JinjaException($"dict keys must be strings (line {d.Line})")] = Eval(val, scope);
                return dict;
            }
            case Attribute a: return JinjaBuiltins.GetAttribute(Eval(a.Target, scope), a.Attr, a.Line);
            case Subscript s:
            {
                var target = Eval(s.Target, scope);
                if (s.Index is Slice sl)
                    return JinjaBuiltins.GetSlice(target, Opt(sl.Start, scope), Opt(sl.Stop, scope), Opt(sl.Step, scope), s.Line);
                return JinjaBuiltins.GetItem(target, Eval(s.Index, scope), s.Line);
            }
            case Call c:
            {
                var callee = Eval(c.Callee, scope);
                var args = c.Args.Select(x => Eval(x, scope)).ToList();
                var kwargs = c.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope));
                if (callee is Callable f) return f.Invoke(args, kwargs);
                if (callee is Undefined u) throw new JinjaException($"{u.Description}, so it cannot be called (line {c.Line})");
                throw new JinjaException($"'{Values.TypeName(callee)}' object is not callable (line {c.Line})");
            }
            case Filter f:
                return JinjaBuiltins.ApplyFilter(f.FilterName, Eval(f.Target, scope), f.Args.Select(x => Eval(x, scope)).ToList(),
                    f.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope)), f.Line);
            case Test t:
            {
                bool r = JinjaBuiltins.ApplyTest(t.TestName, Eval(t.Target, scope), t.Args.Select(x => Eval(x, scope)).ToList(), t.Line);
                return t.Negated ? !r : r;
            }
            case Unary u:
            {
                var x = Eval(u.Operand, scope);
                return u.Op switch
                {
                    "not" => !Values.Truthy(x),
                    "-" => x switch { long l => (object)(-l), double d => -d, _ => throw new JinjaException($"bad operand type for unary -: '{Values.TypeName(x)}' (line {u.Line})") },
                    _ => Values.IsNumber(x) ? x : throw new JinjaException($"bad operand type for unary +: '{Values.TypeName(x)}' (line {u.Line})"),
                };
            }
            case Binary b:
            {
                if (b.Op == "and") { var l = Eval(b.Left, scope); return Values.Truthy(l) ? Eval(b.Right, scope) : l; }
                if (b.Op == "or") { var l = Eval(b.Left, scope); return Values.Truthy(l) ? l : Eval(b.Right, scope); }
                return JinjaBuiltins.BinaryOp(b.Op, Eval(b.Left, scope), Eval(b.Right, scope), b.Line);
            }
            case Conditional c:
                return Values.Truthy(Eval(c.Test, scope)) ? Eval(c.Then, scope)
                    : c.Else is not null ? Eval(c.Else, scope) : new Undefined("the conditional expression has no else branch");
            default: throw new JinjaUnsupportedException(e.GetType().Name, e.Line);
        }
    }

    object? Opt(Expr? e, Scope scope) => e is null ? null : Eval(e, scope);
}
