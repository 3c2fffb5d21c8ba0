namespace PeftSharp.Chat.Jinja;

// The syntax tree. Every node keeps its source line for error messages.

abstract record Node(int Line);

abstract record Expr(int Line) : Node(Line);
sealed record Literal(object? Value, int Line) : Expr(Line);
sealed record Name(string Id, int Line) : Expr(Line);
sealed record ListExpr(List<Expr> Items, bool IsTuple, int Line) : Expr(Line);
sealed record DictExpr(List<(Expr Key, Expr Value)> Items, int Line) : Expr(Line);
sealed record Attribute(Expr Target, string Attr, int Line) : Expr(Line);
sealed record Subscript(Expr Target, Expr Index, int Line) : Expr(Line);
sealed record Slice(Expr? Start, Expr? Stop, Expr? Step, int Line) : Expr(Line);
sealed record Call(Expr Callee, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
sealed record Filter(Expr Target, string FilterName, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
sealed record Test(Expr Target, string TestName, List<Expr> Args, bool Negated, int Line) : Expr(Line);
sealed record Unary(string Op, Expr Operand, int Line) : Expr(Line);
sealed record Binary(string Op, Expr Left, Expr Right, int Line) : Expr(Line);
sealed record Conditional(Expr Test, Expr Then, Expr? Else, int Line) : Expr(Line);

abstract record Stmt(int Line) : Node(Line);
sealed record TextStmt(string Text, int Line) : Stmt(Line);
sealed record Output(Expr Value, int Line) : Stmt(Line);
sealed record IfStmt(Expr Test, List<Stmt> Then, List<Stmt> Else, int Line) : Stmt(Line);
sealed record ForStmt(List<string> Targets, Expr Iterable, Expr? Filter, List<Stmt> Body, List<Stmt> Else, int Line) : Stmt(Line);
/// <summary>set name = value; set a, b = value; set ns.attr = value; or a block set (Value null, Body the block).</summary>
sealed record SetStmt(List<string> Targets, string? Attr, Expr? Value, List<Stmt>? Body, int Line) : Stmt(Line);
sealed record MacroStmt(string MacroName, List<(string Name, Expr? Default)> Params, List<Stmt> Body, int Line) : Stmt(Line);
sealed record BreakStmt(int Line) : Stmt(Line);
sealed record ContinueStmt(int Line) : Stmt(Line);
sealed record FilterBlock(string FilterName, List<Expr> Args, List<Stmt> Body, int Line) : Stmt(Line);
