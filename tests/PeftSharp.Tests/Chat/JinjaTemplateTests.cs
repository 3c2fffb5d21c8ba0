using PeftSharp.Chat.Jinja;

namespace PeftSharp.Tests.Chat;

/// <summary>Jinja semantics chat templates rely on, as Python's Jinja (what transformers runs) has them.</summary>
public class JinjaTemplateTests
{
    static string R(string template, object? messages = null, Dictionary<string, object?>? vars = null)
    {
        var v = vars ?? [];
        if (messages is not null) v["messages"] = messages;
        return JinjaTemplate.Parse(template).Render(v, new DateTime(2025, 7, 10, 12, 0, 0));
    }

    static readonly List<Dictionary<string, object?>> Chat =
    [
        new() { ["role"] = "user", ["content"] = "hi" },
        new() { ["role"] = "assistant", ["content"] = "yo" },
    ];

    [Theory]
    [InlineData("{% for m in messages %}{{ loop.index }}/{{ loop.length }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %};{% endfor %}", "1/2F;2/2L;")]
    [InlineData("{% for m in messages %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.previtem.role if loop.previtem is defined else '-' }}{% endfor %}", "02-11user")]
    [InlineData("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "2")]
    [InlineData("{% set n = 0 %}{% for m in messages %}{% set n = n + 1 %}{% endfor %}{{ n }}", "0")] // set in a loop does not leak
    [InlineData("{% macro t(x, y='!') %}<{{ x }}{{ y }}>{% endmacro %}{{ t('a') }}{{ t('b', y='?') }}", "<a!><b?>")]
    [InlineData("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}", "hi")]
    [InlineData("{{ messages | rejectattr('tool_calls', 'undefined') | list | length }}", "0")] // Undefined attributes are tested, not skipped
    [InlineData("{{ messages | selectattr('tool_calls', 'undefined') | list | length }}", "2")]
    [InlineData("{{ messages[-1]['content'] }}{{ messages[::-1][0].role }}{{ messages[1:] | length }}", "yoassistant1")]
    [InlineData("{{ ' \\nx \\n'.lstrip('\\n') }}|{{ '\\n x\\n'.strip('\\n') }}|{{ '  x  '.strip() }}|", " \nx \n| x|x|")]
    [InlineData("{{ 'a b  c'.split() }}{{ 'a,b'.split(',') }}{{ 'Hello'.startswith('He') }}{{ 'x'.endswith(('y', 'x')) }}", "['a', 'b', 'c']['a', 'b']TrueTrue")]
    [InlineData("{{ {'a': 1, 'b': [true, none, 'q\"']} | tojson }}|{{ [1, 2] | tojson(indent=2) }}", "{\"a\": 1, \"b\": [true, null, \"q\\\"\"]}|[\n  1,\n  2\n]")]
    [InlineData("{{ x | default('d') }}{{ '' | default('e', true) }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}", "deTrueTrueTrue")]
    [InlineData("{{ 'abc' | upper }}{{ 'ABC' | lower }}{{ ' t ' | trim }}{{ 'aXa' | replace('a', 'b') }}{{ [3,1] | first }}{{ [3,1] | last }}", "ABCabctbXb31")]
    [InlineData("{{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 2 ** 3 }} {{ 'a' ~ 1 }} {{ 1 if false }}|{{ 'x' * 3 }}", "3 3.5 2 8 a1 |xxx")]
    [InlineData("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'c': 3}.items() %}{{ k }}{{ v }}{% endfor %}", "a=1;b=2;c3")]
    [InlineData("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", "02")]
    [InlineData("{% for m in messages if m.role == 'assistant' %}{{ loop.index }}{{ m.content }}{% else %}none{% endfor %}", "1yo")]
    [InlineData("{% set x %}in{{ 1 }}{% endset %}[{{ x }}]", "[in1]")]
    [InlineData("{{ strftime_now('%d %b %Y') }}", "10 Jul 2025")]
    [InlineData("{{ none }}{{ true }}{{ 1.0 }}{{ [1, 'a'] }}{{ undefined_thing }}", "NoneTrue1.0[1, 'a']")]
    public void Renders_like_python_jinja(string template, string expected) => Assert.Equal(expected, R(template, Chat));

    [Theory]
    [InlineData("a\n  {% if true %}\n  b\n  {% endif %}\nc", "a\n  b\nc")]       // lstrip_blocks + trim_blocks
    [InlineData("a  {%- if true -%}  b  {%- endif -%}  c", "abc")]             // {%- -%} strips all whitespace
    [InlineData("a\n{{- 'b' -}}\nc\n", "abc")]                                 // and on expressions; one trailing newline dropped
    [InlineData("x {#- comment -#} y", "xy")]
    [InlineData("{{ 'a' }}\n{{ 'b' }}", "a\nb")]                              // trim_blocks does not apply to }}
    public void Whitespace_control_is_transformers(string template, string expected) => Assert.Equal(expected, R(template));

    [Theory]
    [InlineData("{% include 'x' %}", "statement '{% include %}'")]
    [InlineData("{{ x | wordwrap }}", "filter '|wordwrap'")]
    [InlineData("{% if x is prime %}{% endif %}", "test 'is prime'")]
    [InlineData("{% for x in y recursive %}{% endfor %}", "'recursive' for loops")]
    public void Unsupported_constructs_are_named(string template, string construct)
    {
        var e = Assert.Throws<JinjaUnsupportedException>(() => JinjaTemplate.Parse(template));
        Assert.Contains(construct, e.Message);
    }

    [Fact]
    public void An_unsupported_string_method_fails_when_reached_never_renders_wrong()
    {
        var e = Assert.Throws<JinjaUnsupportedException>(() => R("{{ 'x'.zfill(3) }}"));
        Assert.Contains("string method '.zfill()'", e.Message);
    }

    [Theory]
    [InlineData("{% if x %}", "missing '{% endif %}'")]
    [InlineData("{{ 'a' ", "unclosed tag")]
    [InlineData("{{ 'a }}", "unterminated string")]
    [InlineData("{% endfor %}", "unexpected block tag")]
    public void Syntax_errors_say_what_and_where(string template, string cause)
    {
        var e = Assert.ThrowsAny<JinjaException>(() => JinjaTemplate.Parse(template));
        Assert.Contains(cause, e.Message);
    }

    [Fact]
    public void Raise_exception_carries_the_templates_message()
    {
        var e = Assert.Throws<JinjaRaisedException>(() => R("{{ raise_exception('roles must alternate') }}"));
        Assert.Equal("roles must alternate", e.Message);
    }

    [Fact]
    public void Attribute_of_undefined_is_an_error_not_empty_text()
    {
        var e = Assert.ThrowsAny<JinjaException>(() => R("{{ nothing.here }}"));
        Assert.Contains("'nothing' is undefined", e.Message);
    }
}
