using System.Diagnostics;
using IlgpuTune.Data.Templates.Jinja;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// Hostile chat templates (they arrive inside downloaded tokenizer_config.json files) end in a TemplateException, as
/// under jinja2's ImmutableSandboxedEnvironment, never in a stack overflow, a multi-GB allocation, a hang or a raw .NET
/// exception. One case per class the fuzzing of issue 13 found, plus the neighbours of each.
/// </summary>
public class TemplateSandboxTests
{
    static string Render(string source, TemplateLimits? limits = null) =>
        JinjaTemplate.Parse(source).Render(new Dictionary<string, object?>(), limits);

    static TemplateException Fails(string source, string expected, TemplateLimits? limits = null)
    {
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<TemplateException>(() => Render(source, limits));
        Assert.Contains(expected, e.Message);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"took {sw.Elapsed}");
        return e;
    }

    [Fact]
    public void RecursiveMacroIsADepthErrorNotAStackOverflow()
    {
        Fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "macro 'f': recursion deeper than 200");
        // Bounded recursion (a nested JSON schema, say) still renders.
        Assert.Equal("5", Render("{% macro f(n) %}{% if n < 5 %}{{ f(n + 1) }}{% else %}{{ n }}{% endif %}{% endmacro %}{{ f(0) }}"));
    }

    [Fact]
    public void DeepNestingInTheSourceIsASyntaxErrorNotAStackOverflow()
    {
        Fails("{{ " + new string('(', 100_000) + "1" + new string(')', 100_000) + " }}", "deeper than 200 levels");
        Fails("{{ " + string.Concat(Enumerable.Repeat("not ", 100_000)) + "1 }}", "deeper than 200 levels");
        Fails("{{ " + new string('-', 100_000) + "1 }}", "deeper than 200 levels");
        Fails(string.Concat(Enumerable.Repeat("{% if 1 %}", 100_000)), "deeper than 200 levels");
        // Left-associative chains parse in a loop but evaluate as deep trees.
        Fails("{{ 1" + string.Concat(Enumerable.Repeat(" + 1", 200_000)) + " }}", "nested too deeply");
        Fails("{{ 'a'" + string.Concat(Enumerable.Repeat("|lower", 200_000)) + " }}", "nested too deeply");
        Assert.Equal("201", Render("{{ 1" + string.Concat(Enumerable.Repeat(" + 1", 200)) + " }}"));
    }

    [Fact]
    public void RangeIsCappedAsInJinja2Sandbox()
    {
        Fails("{% for i in range(99999999999) %}{% endfor %}", "range too big");
        Fails("{{ range(0, 9223372036854775807, 2) | length }}", "range too big");
        Fails("{{ range(9223372036854775807, -9223372036854775807, -1) | length }}", "range too big");
        Assert.Equal("100000", Render("{{ range(100000) | length }}"));
        Assert.Equal("[10, 7, 4, 1]", Render("{{ range(10, 0, -3) | list }}"));
        Fails("{{ range(1, 2, 0) }}", "must not be zero");
    }

    [Fact]
    public void RepetitionAndPaddingAreRefusedBeforeTheyAllocate()
    {
        Fails("{{ 'ab' * 9999999999 }}", "string repetition");
        Fails("{{ [1, 2] * 9223372036854775807 }}", "list repetition");
        Fails("{{ 'x' | indent(2147483647, true) }}", "indent");
        Fails("{{ 'a\nb\nc' | indent(9223372036854775807) }}", "indent");
        Fails("{{ ('x' * 1000000) | replace('', 'yyyyyyyyyyyy') }}", "replace");
        Fails("{{ (['x' * 1000000] * 1000) | join(',') }}", "join");
        Fails("{{ ([('x' * 1000000)] * 1000) | string }}", "repr");
        Fails("{{ [1] | tojson(indent=9223372036854775807) }}", "tojson");
        Assert.Equal("abab", Render("{{ 'ab' * 2 }}"));
        Assert.Equal("", Render("{{ 'ab' * -3 }}"));
        Assert.Equal("a\nb", Render("{{ 'a\nb' | indent(-4) }}"));   // ' ' * -4 == '' in Python
    }

    [Fact]
    public void OutputAndTimeAreBudgetedPerRender()
    {
        var small = new TemplateLimits(MaxOutput: 1000, TimeBudget: TimeSpan.FromSeconds(10));
        Fails("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", "output exceeds", small);
        var quick = new TemplateLimits(MaxOutput: 10_000_000, TimeBudget: TimeSpan.FromMilliseconds(300));
        Fails("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "time budget", quick);
        Fails("{% set ns = namespace(s='x' * 1000000) %}{% for i in range(100000) %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}", "time budget", quick);
        Fails("{% set ns = namespace(s='xx') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "string concatenation");
    }

    [Fact]
    public void IntegersAre64BitAndOverflowIsRefusedClearly()
    {
        Fails("{{ 99999999999999999999 }}", "does not fit in 64 bits");
        Fails("{{ 9223372036854775807 + 1 }}", "integer overflow");
        Fails("{{ 4294967296 * 4294967296 }}", "integer overflow");
        Fails("{{ 2 ** 9999999999 }}", "integer overflow");
        Fails("{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow");
        Fails("{{ -(-9223372036854775807 - 1) }}", "integer overflow");
        Fails("{{ (-9223372036854775807 - 1) | abs }}", "integer overflow");
        Fails("{{ 1e300 | int }}", "64-bit integer");
        Assert.Equal("9223372036854775807", Render("{{ 9223372036854775807 }}"));
        Assert.Equal("1024 1 0", Render("{{ 2 ** 10 }} {{ 1 ** 9999999999 }} {{ (-9223372036854775807 - 1) % -1 }}"));
        Assert.Equal("True", Render("{{ 9007199254740993 > 9007199254740992 }}"));   // exact, not via double
    }

    [Fact]
    public void BuiltinDomainErrorsAreTemplateErrors()
    {
        Fails("{{ 4 is divisibleby(0) }}", "divisibleby(0)");
        Assert.Equal("True", Render("{{ (-9223372036854775807 - 1) is divisibleby(-1) }}"));
        Fails("{{ '\\U00110000' }}", "illegal Unicode character");
        Fails("{{ '\\UFFFFFFFF' }}", "illegal Unicode character");
        Fails("{{ '\\u12' }}", "truncated \\u escape");
        Fails("{{ '\\x+1' }}", "truncated \\x escape");
        Fails("{{ 'abc'.find(1) }}", "needs a string");
        Fails("{{ 'abc'.count(none) }}", "needs a string");
        Fails("{{ 'abc'.startswith(['a', 1]) }}", "only strings");
        Fails("{{ [1, 'a'] | sort }}", "not supported between");
        Fails("{{ 0 ** -1 }}", "negative power");
        Fails("{{ 1.5 // 0 }}", "division by zero");
        Fails("{{ f(a=1, a=2) }}", "repeated");
        Fails("{{ (1e300 * 1e300) | int }}", "64-bit integer");
    }

    [Fact]
    public void EdgeValuesRenderAsPython()
    {
        Assert.Equal("[1]", Render("{{ [1, 2, 3][::9223372036854775807] }}"));
        Assert.Equal("[3]", Render("{{ [1, 2, 3][::-9223372036854775807] }}"));
        Assert.Equal("\ud800", Render("{{ '\\ud800' }}"));   // Python's str holds a lone surrogate
        Assert.Equal("𝄞", Render("{{ '\\U0001D11E' }}"));
        Assert.Equal("[1, 1, 2, 3]", Render("{{ [3, 1, 2, 1] | sort }}"));
        Assert.Equal("[{'k': 2, 'v': 'a'}, {'k': 2, 'v': 'b'}, {'k': 1, 'v': 'c'}]",
            Render("{{ [{'k': 2, 'v': 'a'}, {'k': 1, 'v': 'c'}, {'k': 2, 'v': 'b'}] | sort(reverse=true, attribute='k') }}"));   // stable
        Assert.Equal("2 -1", Render("{{ 'a𝄞b'.find('b') }} {{ 'abc'.rfind('z') }}"));   // code points, as Python
    }

    [Fact]
    public void SelfNestedValuesFailClearly()
    {
        const string nest = "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}";
        Fails(nest + "{{ ns.x }}", "nested deeper than 200");
        Fails(nest + "{{ ns.x | tojson }}", "nested deeper than 200");
        Fails(nest + "{{ ns.x == [ns.x] }}", "nested deeper than 200");
        Assert.Equal("True", Render(nest + "{{ ns.x == ns.x }}"));   // identity first, as Python compares
    }
}
