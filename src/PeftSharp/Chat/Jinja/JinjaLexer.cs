using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Chat.Jinja;

enum TokenKind { Text, OpenStatement, CloseStatement, OpenExpression, CloseExpression, Name, String, Integer, Float, Operator, End }

sealed record Token(TokenKind Kind, string Value, int Line);

/// <summary>
/// Splits a template into text and tag tokens, with the whitespace rules transformers renders chat templates with:
/// trim_blocks and lstrip_blocks on, a single trailing newline dropped, <c>{%-</c>/<c>-%}</c> (and the same on
/// <c>{{</c>, <c>{#</c>) stripping all whitespace on that side. The preprocessing follows @huggingface/jinja, which
/// does the same as Python's Jinja for these settings; <c>{% generation %}</c> markers (transformers' assistant-mask
/// extension) render as nothing, as they do there.
/// </summary>
static partial class JinjaLexer
{
    [GeneratedRegex(@"^[ \t]*(\{[#%-])", RegexOptions.Multiline)] private static partial Regex LstripBlocks();
    [GeneratedRegex(@"([#%-]\})\n")] private static partial Regex TrimBlocks();
    [GeneratedRegex(@"(\s*)\{%(-?)\s*(?:end)?generation\s*(-?)%\}(\s*)", RegexOptions.Singleline)] private static partial Regex Generation();

    static readonly string[] Operators = ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=",
        "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

    public static string Preprocess(string template)
    {
        if (template.EndsWith('\n')) template = template[..^1];
        template = LstripBlocks().Replace(template, "$1");
        template = TrimBlocks().Replace(template, "$1");
        return Generation().Replace(template, m =>
            (m.Groups[2].Value == "-" ? "" : m.Groups[1].Value) + (m.Groups[3].Value == "-" ? "" : m.Groups[4].Value));
    }

    public static List<Token> Tokenize(string source)
    {
        string src = Preprocess(source);
        var tokens = new List<Token>();
        int pos = 0, line = 1;
        void Advance(int n) { for (int k = 0; k < n; k++) if (src[pos++] == '\n') line++; }
        void StripLastText()
        {
            if (tokens.Count > 0 && tokens[^1].Kind == TokenKind.Text)
            {
                string t = tokens[^1].Value.TrimEnd();
                if (t.Length == 0) tokens.RemoveAt(tokens.Count - 1);
                else tokens[^1] = tokens[^1] with { Value = t };
            }
        }
        void SkipWhitespace() { while (pos < src.Length && char.IsWhiteSpace(src[pos])) Advance(1); }

        while (pos < src.Length)
        {
            int open = FindTagStart(src, pos);
            if (open < 0) open = src.Length;
            if (open > pos) { tokens.Add(new Token(TokenKind.Text, src[pos..open], line)); Advance(open - pos); continue; }

            char kind = src[pos + 1];
            bool stripBefore = pos + 2 < src.Length && src[pos + 2] == '-';
            if (stripBefore) StripLastText();
            int tagLine = line;
            Advance(stripBefore || (pos + 2 < src.Length && src[pos + 2] == '+') ? 3 : 2);
            if (kind == '#')
            {
                int close = src.IndexOf("#}", pos, StringComparison.Ordinal);
                if (close < 0) throw new JinjaException($"unclosed comment (line {tagLine})");
                bool stripAfter = close > pos && src[close - 1] == '-';
                Advance(close + 2 - pos);
                if (stripAfter) SkipWhitespace();
                continue;
            }
            tokens.Add(new Token(kind == '%' ? TokenKind.OpenStatement : TokenKind.OpenExpression, kind == '%' ? "{%" : "{{", tagLine));
            string closer = kind == '%' ? "%}" : "}}";
            int depth = 0;
            while (true)
            {
                while (pos < src.Length && char.IsWhiteSpace(src[pos])) Advance(1);
                if (pos >= src.Length) throw new JinjaException($"unclosed tag '{(kind == '%' ? "{%" : "{{")}' (line {tagLine})");
                bool dashClose = string.CompareOrdinal(src, pos, "-" + closer, 0, 3) == 0;
                bool plusClose = string.CompareOrdinal(src, pos, "+" + closer, 0, 3) == 0;
                if (depth == 0 && (dashClose || plusClose || string.CompareOrdinal(src, pos, closer, 0, 2) == 0))
                {
                    Advance(dashClose || plusClose ? 3 : 2);
                    tokens.Add(new Token(kind == '%' ? TokenKind.CloseStatement : TokenKind.CloseExpression, closer, line));
                    if (dashClose) SkipWhitespace();
                    break;
                }
                char c = src[pos];
                if (c is '\'' or '"') { tokens.Add(new Token(TokenKind.String, ReadString(src, ref pos, ref line), line)); continue; }
                if (char.IsAsciiDigit(c))
                {
                    int start = pos;
                    while (pos < src.Length && (char.IsAsciiDigit(src[pos]) || src[pos] == '_')) pos++;
                    bool isFloat = false;
                    // "1.5" is a float; "x.0" (an attribute) never reaches here because names are read whole.
                    if (pos + 1 < src.Length && src[pos] == '.' && char.IsAsciiDigit(src[pos + 1]) && (tokens.Count == 0 || tokens[^1].Value != "."))
                    {
                        isFloat = true; pos++;
                        while (pos < src.Length && char.IsAsciiDigit(src[pos])) pos++;
                    }
                    if (pos < src.Length && src[pos] is 'e' or 'E')
                    {
                        int save = pos; pos++;
                        if (pos < src.Length && src[pos] is '+' or '-') pos++;
                        if (pos < src.Length && char.IsAsciiDigit(src[pos])) { isFloat = true; while (pos < src.Length && char.IsAsciiDigit(src[pos])) pos++; }
                        else pos = save;
                    }
                    tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, src[start..pos].Replace("_", ""), line));
                    continue;
                }
                if (char.IsLetter(c) || c == '_')
                {
                    int start = pos;
                    while (pos < src.Length && (char.IsLetterOrDigit(src[pos]) || src[pos] == '_')) pos++;
                    tokens.Add(new Token(TokenKind.Name, src[start..pos], line));
                    continue;
                }
                string? op = Operators.FirstOrDefault(o => string.CompareOrdinal(src, pos, o, 0, o.Length) == 0);
                if (op is null) throw new JinjaException($"unexpected character '{c}' (line {line})");
                if (op == "{") depth++;
                else if (op == "}") depth--;
                tokens.Add(new Token(TokenKind.Operator, op, line));
                pos += op.Length;
            }
        }
        tokens.Add(new Token(TokenKind.End, "", line));
        return tokens;
    }

    static int FindTagStart(string src, int from)
    {
        for (int i = src.IndexOf('{', from); i >= 0 && i + 1 < src.Length; i = src.IndexOf('{', i + 1))
            if (src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>A quoted string with Python's escapes (\n, \t, \\, \', \", \xHH, \uHHHH, ...).</summary>
    static string ReadString(string src, ref int pos, ref int line)
    {
        char quote = src[pos++];
        var sb = new StringBuilder();
        while (true)
        {
            if (pos >= src.Length) throw new JinjaException($"unterminated string literal (line {line})");
            char c = src[pos++];
            if (c == quote) return sb.ToString();
            if (c == '\n') line++;
            if (c != '\\') { sb.Append(c); continue; }
            if (pos >= src.Length) throw new JinjaException($"unterminated string literal (line {line})");
            char e = src[pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case '0': sb.Append('\0'); break;
                case '\\': case '\'': case '"': sb.Append(e); break;
                case '\n': line++; break; // a backslash-newline continues the string
                case 'x': case 'u': case 'U':
                    int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (pos + n > src.Length || !int.TryParse(src.AsSpan(pos, n), NumberStyles.HexNumber, null, out int cp))
                        throw new JinjaException($"invalid \\{e} escape in string literal (line {line})");
                    sb.Append(char.ConvertFromUtf32(cp)); pos += n; break;
                default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes as written
            }
        }
    }
}
