using System.Text;

namespace IlgpuTune.Data.Templates;

/// <summary>
/// An XTuner PROMPT_TEMPLATE entry. Null members are keys the Python dict does not have (template.get(...) = None).
/// </summary>
public sealed record PromptTemplate(string Name, string? System, string Instruction, string? Suffix, bool SuffixAsEos,
    string? Sep, IReadOnlyList<string> StopWords);

public static partial class XtunerTemplates
{
    /// <summary>The PROMPT_TEMPLATE of that name; the error lists the known names.</summary>
    public static PromptTemplate Get(string name) => Prompt.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"unknown prompt template '{name}'; known: {string.Join(", ", Prompt.Keys)}");

    /// <summary>Python str.format with keyword arguments only: {name} fields, {{ and }} escapes.</summary>
    public static string Format(string template, params (string Name, string Value)[] args)
    {
        var sb = new StringBuilder(template.Length + 64);
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            if (c == '{' && i + 1 < template.Length && template[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < template.Length && template[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c == '}') throw new FormatException($"single '}}' in template {template}");
            if (c != '{') { sb.Append(c); continue; }
            int end = template.IndexOf('}', i + 1);
            if (end < 0) throw new FormatException($"unclosed '{{' in template {template}");
            string field = template[(i + 1)..end];
            if (field.IndexOfAny([':', '!', '[', '.']) >= 0) throw new FormatException($"format spec '{{{field}}}' is not supported");
            int k = Array.FindIndex(args, a => a.Name == field);
            if (k < 0) throw new KeyNotFoundException($"template field '{{{field}}}' has no value");
            sb.Append(args[k].Value);
            i = end;
        }
        return sb.ToString();
    }
}
