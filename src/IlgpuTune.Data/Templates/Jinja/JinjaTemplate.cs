using System.Collections;
using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Templates.Jinja;

/// <summary>
/// A parsed Jinja2 template, evaluated with the semantics transformers' apply_chat_template uses (sandboxed, immutable,
/// trim_blocks, lstrip_blocks, loopcontrols, default Undefined). Covers the subset chat templates use; anything else
/// fails with a <see cref="TemplateException"/> naming it rather than rendering something different.
/// </summary>
public sealed class JinjaTemplate
{
    readonly List<Node> _body;

    JinjaTemplate(List<Node> body) => _body = body;

    public static JinjaTemplate Parse(string source) => new(JinjaParser.Parse(source));

    /// <summary>
    /// Values: null, bool, int/long, double, string, JsonElement, IDictionary with string keys, IEnumerable. The render
    /// runs within <paramref name="limits"/> (default <see cref="TemplateLimits.Default"/>).
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> variables, TemplateLimits? limits = null)
    {
        var globals = Builtins.Globals();
        foreach (var (k, v) in variables) globals[k] = Convert(v);
        var c = new Context([globals, []], new StringBuilder(), new Sandbox(limits ?? TemplateLimits.Default));
        Node.RenderAll(_body, c);
        return c.Out.ToString();
    }

    static object? Convert(object? v) => v switch
    {
        null or bool or long or double or string => v,
        int i => (long)i,
        float f => (double)f,
        JsonElement e => Py.FromJson(e),
        IDictionary d => d.Keys.Cast<object>().ToDictionary(k => k as string ?? throw new ArgumentException("dictionary keys must be strings"), k => Convert(d[k])),
        IEnumerable e => e.Cast<object?>().Select(Convert).ToList(),
        _ => throw new ArgumentException($"cannot pass a {v.GetType().Name} to a template"),
    };
}
