using System.Globalization;

namespace PeftSharp.Chat.Jinja;

/// <summary>
/// Recursive-descent parser for the Jinja subset chat templates use, with Jinja's operator precedence
/// (conditional &lt; or &lt; and &lt; not &lt; comparison/in &lt; + - &lt; ~ &lt; * / // % &lt; ** &lt; unary &lt; filters/tests &lt;
/// postfix). Filters and tests are checked against the implemented ones here, so an unsupported one is an error
/// even in a branch that a given conversation never takes.
/// </summary>
sealed class JinjaParser(List<Token> tokens)
{
    int _i;

    Token Peek => tokens[_i];
    Token PeekAt(int k) => tokens[Math.Min(_i + k, tokens.Count - 1)];
    Token Next() => tokens[_i++];

    bool IsOp(string op) => Peek.Kind == TokenKind.Operator && Peek.Value == op;
    bool IsName(string name) => Peek.Kind == TokenKind.Name && Peek.Value == name;
    bool AcceptOp(string op) { if (!IsOp(op)) return false; _i++; return true; }
    bool AcceptName(string name) { if (!IsName(name)) return false; _i++; return true; }

    void ExpectOp(string op)
    {
        if (!AcceptOp(op)) throw Error($"expected '{op}'");
    }

    string ExpectName()
    {
        if (Peek.Kind != TokenKind.Name) throw Error("expected a name");
        return Next().Value;
    }

    void ExpectClose(TokenKind kind)
    {
        if (Peek.Kind != kind) throw Error($"expected '{(kind == TokenKind.CloseStatement ? "%}" : "}}")}'");
        _i++;
    }

    JinjaException Error(string what) =>
        new($"syntax error: {what}, got {(Peek.Kind == TokenKind.End ? "end of template" : $"'{Peek.Value}'")} (line {Peek.Line})");

    public List<Stmt> ParseTemplate()
    {
        var body = ParseBody([]);
        if (Peek.Kind != TokenKind.End) throw Error("unexpected block tag");
        return body;
    }

    /// <summary>Statements up to (not including) a block tag named in <paramref name="enders"/>.</summary>
    List<Stmt> ParseBody(string[] enders)
    {
        var body = new List<Stmt>();
        while (Peek.Kind != TokenKind.End)
        {
            var t = Peek;
            if (t.Kind == TokenKind.Text) { body.Add(new TextStmt(t.Value, t.Line)); _i++; }
            else if (t.Kind == TokenKind.OpenExpression)
            {
                _i++;
                body.Add(new Output(ParseExpression(), t.Line));
                ExpectClose(TokenKind.CloseExpression);
            }
            else if (t.Kind == TokenKind.OpenStatement)
            {
                var keyword = PeekAt(1);
                if (keyword.Kind == TokenKind.Name && enders.Contains(keyword.Value)) return body;
                _i++;
                body.Add(ParseStatement());
            }
            else throw Error("unexpected token");
        }
        if (enders.Length > 0) throw Error($"missing '{{% {enders[^1]} %}}'");
        return body;
    }

    /// <summary>Consumes "{% name" of a block's closing/continuation tag.</summary>
    void ExpectTag(string name)
    {
        if (Peek.Kind != TokenKind.OpenStatement || PeekAt(1).Value != name) throw Error($"expected '{{% {name} %}}'");
        _i += 2;
    }

    Stmt ParseStatement()
    {
        var t = Peek;
        if (t.Kind != TokenKind.Name) throw Error("expected a statement name");
        _i++;
        switch (t.Value)
        {
            case "if": return ParseIf(t.Line);
            case "for": return ParseFor(t.Line);
            case "set": return ParseSet(t.Line);
            case "macro": return ParseMacro(t.Line);
            case "break": ExpectClose(TokenKind.CloseStatement); return new BreakStmt(t.Line);
            case "continue": ExpectClose(TokenKind.CloseStatement); return new ContinueStmt(t.Line);
            case "filter":
            {
                var (name, args, _) = ParseFilterCall(t.Line);
                ExpectClose(TokenKind.CloseStatement);
                var body = ParseBody(["endfilter"]);
                ExpectTag("endfilter"); ExpectClose(TokenKind.CloseStatement);
                return new FilterBlock(name, args, body, t.Line);
            }
            case "elif" or "else" or "endif" or "endfor" or "endset" or "endmacro" or "endfilter":
                _i--;
                throw Error("unexpected block tag");
            default: throw new JinjaUnsupportedException($"statement '{{% {t.Value} %}}'", t.Line);
        }
    }

    Stmt ParseIf(int line)
    {
        var test = ParseExpression();
        ExpectClose(TokenKind.CloseStatement);
        var then = ParseBody(["elif", "else", "endif"]);
        List<Stmt> otherwise = [];
        var tag = PeekAt(1);
        _i += 2;
        if (tag.Value == "elif") otherwise = [ParseIf(tag.Line)];
        else if (tag.Value == "else")
        {
            ExpectClose(TokenKind.CloseStatement);
            otherwise = ParseBody(["endif"]);
            ExpectTag("endif"); ExpectClose(TokenKind.CloseStatement);
        }
        else ExpectClose(TokenKind.CloseStatement);
        return new IfStmt(test, then, otherwise, line);
    }

    Stmt ParseFor(int line)
    {
        var targets = new List<string> { ExpectName() };
        while (AcceptOp(",")) targets.Add(ExpectName());
        if (!AcceptName("in")) throw Error("expected 'in'");
        var iterable = ParseOr(allowConditional: false);
        Expr? filter = AcceptName("if") ? ParseOr(allowConditional: false) : null;
        if (IsName("recursive")) throw new JinjaUnsupportedException("'recursive' for loops", line);
        ExpectClose(TokenKind.CloseStatement);
        var body = ParseBody(["else", "endfor"]);
        List<Stmt> otherwise = [];
        if (PeekAt(1).Value == "else")
        {
            _i += 2; ExpectClose(TokenKind.CloseStatement);
            otherwise = ParseBody(["endfor"]);
        }
        ExpectTag("endfor"); ExpectClose(TokenKind.CloseStatement);
        return new ForStmt(targets, iterable, filter, body, otherwise, line);
    }

    Stmt ParseSet(int line)
    {
        var targets = new List<string> { ExpectName() };
        string? attr = null;
        if (AcceptOp(".")) attr = ExpectName();
        else while (AcceptOp(",")) targets.Add(ExpectName());
        if (AcceptOp("="))
        {
            var value = ParseTuple();
            ExpectClose(TokenKind.CloseStatement);
            return new SetStmt(targets, attr, value, null, line);
        }
        if (targets.Count > 1 || attr is not null) throw Error("expected '='");
        ExpectClose(TokenKind.CloseStatement);
        var body = ParseBody(["endset"]);
        ExpectTag("endset"); ExpectClose(TokenKind.CloseStatement);
        return new SetStmt(targets, null, null, body, line);
    }

    Stmt ParseMacro(int line)
    {
        string name = ExpectName();
        ExpectOp("(");
        var parameters = new List<(string, Expr?)>();
        while (!IsOp(")"))
        {
            string p = ExpectName();
            parameters.Add((p, AcceptOp("=") ? ParseExpression() : null));
            if (!AcceptOp(",")) break;
        }
        ExpectOp(")");
        ExpectClose(TokenKind.CloseStatement);
        var body = ParseBody(["endmacro"]);
        ExpectTag("endmacro");
        if (Peek.Kind == TokenKind.Name) _i++; // {% endmacro name %}
        ExpectClose(TokenKind.CloseStatement);
        return new MacroStmt(name, parameters, body, line);
    }

    /// <summary>An expression, or an unparenthesised tuple "a, b" (as in "set x = a, b").</summary>
    Expr ParseTuple()
    {
        var first = ParseExpression();
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (AcceptOp(",") && !(Peek.Kind is TokenKind.CloseStatement or TokenKind.CloseExpression)) items.Add(ParseExpression());
        return new ListExpr(items, true, first.Line);
    }

    public Expr ParseExpression() => ParseOr(allowConditional: true);

    Expr ParseOr(bool allowConditional)
    {
        var left = ParseAnd();
        while (IsName("or")) { int l = Next().Line; left = new Binary("or", left, ParseAnd(), l); }
        if (allowConditional && IsName("if"))
        {
            int l = Next().Line;
            var test = ParseOr(allowConditional: false);
            Expr? otherwise = AcceptName("else") ? ParseOr(allowConditional: true) : null;
            return new Conditional(test, left, otherwise, l);
        }
        return left;
    }

    Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and")) { int l = Next().Line; left = new Binary("and", left, ParseNot(), l); }
        return left;
    }

    Expr ParseNot()
    {
        if (IsName("not")) { int l = Next().Line; return new Unary("not", ParseNot(), l); }
        return ParseCompare();
    }

    static readonly string[] Comparisons = ["==", "!=", "<", ">", "<=", ">="];

    Expr ParseCompare()
    {
        var left = ParseAdd();
        while (true)
        {
            int l = Peek.Line;
            if (Peek.Kind == TokenKind.Operator && Comparisons.Contains(Peek.Value)) { string op = Next().Value; left = new Binary(op, left, ParseAdd(), l); }
            else if (IsName("in")) { _i++; left = new Binary("in", left, ParseAdd(), l); }
            else if (IsName("not") && PeekAt(1).Kind == TokenKind.Name && PeekAt(1).Value == "in") { _i += 2; left = new Binary("not in", left, ParseAdd(), l); }
            else return left;
        }
    }

    Expr ParseAdd()
    {
        var left = ParseConcat();
        while (IsOp("+") || IsOp("-")) { var t = Next(); left = new Binary(t.Value, left, ParseConcat(), t.Line); }
        return left;
    }

    Expr ParseConcat()
    {
        var left = ParseMul();
        while (IsOp("~")) { var t = Next(); left = new Binary("~", left, ParseMul(), t.Line); }
        return left;
    }

    Expr ParseMul()
    {
        var left = ParsePow();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { var t = Next(); left = new Binary(t.Value, left, ParsePow(), t.Line); }
        return left;
    }

    Expr ParsePow()
    {
        var left = ParseUnary();
        while (IsOp("**")) { var t = Next(); left = new Binary("**", left, ParseUnary(), t.Line); }
        return left;
    }

    Expr ParseUnary()
    {
        if (IsOp("-") || IsOp("+")) { var t = Next(); return ParseFilters(new Unary(t.Value, ParseUnary(), t.Line)); }
        return ParseFilters(ParsePostfix(ParsePrimary()));
    }

    Expr ParseFilters(Expr node)
    {
        while (true)
        {
            if (IsOp("|"))
            {
                int l = Next().Line;
                var (name, args, kwargs) = ParseFilterCall(l);
                node = new Filter(node, name, args, kwargs, l);
            }
            else if (IsName("is"))
            {
                int l = Next().Line;
                bool negated = AcceptName("not");
                string name = ExpectName();
                if (!JinjaBuiltins.Tests.ContainsKey(name)) throw new JinjaUnsupportedException($"test 'is {name}'", l);
                var args = new List<Expr>();
                if (IsOp("(")) args = ParseCallArgs().Args;
                else if (Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                         || (Peek.Kind == TokenKind.Name && Peek.Value is not ("and" or "or" or "else" or "if" or "in" or "is" or "not")))
                    args.Add(ParsePostfix(ParsePrimary()));
                node = new Test(node, name, args, negated, l);
            }
            else return node;
        }
    }

    (string Name, List<Expr> Args, List<(string, Expr)> Kwargs) ParseFilterCall(int line)
    {
        string name = ExpectName();
        if (!JinjaBuiltins.Filters.ContainsKey(name)) throw new JinjaUnsupportedException($"filter '|{name}'", line);
        if (!IsOp("(")) return (name, [], []);
        var (args, kwargs) = ParseCallArgs();
        return (name, args, kwargs);
    }

    (List<Expr> Args, List<(string, Expr)> Kwargs) ParseCallArgs()
    {
        ExpectOp("(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!IsOp(")"))
        {
            if (IsOp("*")) throw new JinjaUnsupportedException("'*args' in a call", Peek.Line);
            if (Peek.Kind == TokenKind.Name && PeekAt(1).Kind == TokenKind.Operator && PeekAt(1).Value == "=")
            {
                string k = Next().Value; _i++;
                kwargs.Add((k, ParseExpression()));
            }
            else args.Add(ParseExpression());
            if (!AcceptOp(",")) break;
        }
        ExpectOp(")");
        return (args, kwargs);
    }

    Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            int l = Peek.Line;
            if (AcceptOp("."))
            {
                if (Peek.Kind == TokenKind.Integer) node = new Subscript(node, new Literal(long.Parse(Next().Value, CultureInfo.InvariantCulture), l), l);
                else node = new Attribute(node, ExpectName(), l);
            }
            else if (AcceptOp("["))
            {
                Expr index;
                Expr? start = IsOp(":") ? null : ParseExpression();
                if (AcceptOp(":"))
                {
                    Expr? stop = IsOp(":") || IsOp("]") ? null : ParseExpression();
                    Expr? step = AcceptOp(":") && !IsOp("]") ? ParseExpression() : null;
                    index = new Slice(start, stop, step, l);
                }
                else index = start!;
                ExpectOp("]");
                node = new Subscript(node, index, l);
            }
            else if (IsOp("("))
            {
                var (args, kwargs) = ParseCallArgs();
                node = new Call(node, args, kwargs, l);
            }
            else return node;
        }
    }

    Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.String:
            {
                string s = t.Value;
                while (Peek.Kind == TokenKind.String) s += Next().Value; // adjacent literals concatenate
                return new Literal(s, t.Line);
            }
            case TokenKind.Integer: return new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Float: return new Literal(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new Literal(true, t.Line),
                    "false" or "False" => new Literal(false, t.Line),
                    "none" or "None" => new Literal(null, t.Line),
                    _ => new Name(t.Value, t.Line),
                };
            case TokenKind.Operator when t.Value == "(":
            {
                if (AcceptOp(")")) return new ListExpr([], true, t.Line);
                var first = ParseExpression();
                if (AcceptOp(")")) return first;
                var items = new List<Expr> { first };
                while (AcceptOp(",") && !IsOp(")")) items.Add(ParseExpression());
                ExpectOp(")");
                return new ListExpr(items, true, t.Line);
            }
            case TokenKind.Operator when t.Value == "[":
            {
                var items = new List<Expr>();
                while (!IsOp("]")) { items.Add(ParseExpression()); if (!AcceptOp(",")) break; }
                ExpectOp("]");
                return new ListExpr(items, false, t.Line);
            }
            case TokenKind.Operator when t.Value == "{":
            {
                var items = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    var k = ParseExpression(); ExpectOp(":");
                    items.Add((k, ParseExpression()));
                    if (!AcceptOp(",")) break;
                }
                ExpectOp("}");
                return new DictExpr(items, t.Line);
            }
            default:
                _i--;
                throw Error("expected an expression");
        }
    }
}
