using System.Text;
using System.Text.Json;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;

namespace IlgpuTune.Data.Tests;

/// <summary>Renders equal transformers apply_chat_template (expected-chat-templates.json) and Jinja2 edge cases.</summary>
public class ChatTemplateTests
{
    [Fact]
    public void RendersEqualTransformers()
    {
        var fx = Fixtures.Json("expected-chat-templates.json");
        var chats = Fixtures.Json("chat-conversations.json").EnumerateArray().ToList();
        string llama2Style = File.ReadAllText(Fixtures.Path("llama2-style-chat-template.jinja"));
        var failures = new StringBuilder();
        int n = 0;
        foreach (var r in fx.GetProperty("renders").EnumerateArray())
        {
            string name = r.GetProperty("tokenizer").GetString()!;
            var config = RealTokenizers.Get(name).Config;
            string source = r.GetProperty("template").GetString() == "own" ? ChatTemplates.Resolve("auto", config)! : llama2Style;
            var kwargs = r.GetProperty("kwargs").EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value);
            var conv = chats[r.GetProperty("conversation").GetInt32()];
            bool gen = r.GetProperty("add_generation_prompt").GetBoolean();
            string actual;
            try
            {
                actual = ChatTemplates.Render(JinjaTemplate.Parse(source), conv, config, gen, kwargs);
            }
            catch (TemplateException e)
            {
                actual = "error: " + e.Message;
            }
            string expected = r.TryGetProperty("text", out var t) ? t.GetString()! : "error: " + r.GetProperty("error").GetString();
            if (actual != expected)
                failures.AppendLine($"{name} conv {r.GetProperty("conversation")} gen={gen} {r.GetProperty("kwargs")}\n  expected {JsonSerializer.Serialize(expected)}\n  actual   {JsonSerializer.Serialize(actual)}");
            n++;
        }
        Assert.Equal(40, n);
        Assert.True(failures.Length == 0, failures.ToString());
    }

    /// <summary>Whitespace control, precedence, slicing, str methods, filters, tests, loops, scoping, macros and errors
    /// rendered by Jinja2 3.1 as transformers configures it (tools/templates/make_jinja_cases.py).</summary>
    [Fact]
    public void EdgeCasesEqualJinja2()
    {
        var fx = Fixtures.Json("expected-jinja-cases.json");
        var vars = fx.GetProperty("variables").EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value);
        var failures = new StringBuilder();
        int n = 0;
        foreach (var c in fx.GetProperty("cases").EnumerateArray())
        {
            string src = c.GetProperty("template").GetString()!;
            string actual;
            try
            {
                actual = JinjaTemplate.Parse(src).Render(vars);
            }
            catch (TemplateException e)
            {
                actual = "error: " + e.Message;
            }
            n++;
            if (c.TryGetProperty("error", out _))
            {
                if (!actual.StartsWith("error: ", StringComparison.Ordinal))
                    failures.AppendLine($"{JsonSerializer.Serialize(src)}\n  expected an error ({c.GetProperty("python_error")})\n  actual   {JsonSerializer.Serialize(actual)}");
                continue;
            }
            string expected = c.GetProperty("text").GetString()!;
            if (actual != expected)
                failures.AppendLine($"{JsonSerializer.Serialize(src)}\n  expected {JsonSerializer.Serialize(expected)}\n  actual   {JsonSerializer.Serialize(actual)}");
        }
        Assert.True(n > 30);
        Assert.True(failures.Length == 0, failures.ToString());
    }

    [Fact]
    public void Qwen3ToolCallingPathsEqualJinja2()
    {
        var fx = Fixtures.Json("expected-jinja-cases.json").GetProperty("qwen3_tools");
        var config = RealTokenizers.Get("qwen3").Config;
        string text = ChatTemplates.Render(JinjaTemplate.Parse(ChatTemplates.Resolve("auto", config)!), fx.GetProperty("messages"), config,
            addGenerationPrompt: true, new Dictionary<string, object?> { ["tools"] = fx.GetProperty("tools") });
        Assert.Equal(fx.GetProperty("text").GetString(), text);
    }

    [Fact]
    public void RaiseExceptionCarriesTheTemplatesMessage()
    {
        var e = Assert.Throws<TemplateException>(() => JinjaTemplate.Parse("{{ raise_exception('roles must alternate') }}").Render(new Dictionary<string, object?>()));
        Assert.Equal("roles must alternate", e.Message);
        var syntax = Assert.Throws<TemplateException>(() => JinjaTemplate.Parse("a\n{% if x %}b"));
        Assert.Contains("endif", syntax.Message);
    }
}
