using System.Text.Json;
using System.Text.RegularExpressions;

namespace IlgpuTune.Data.Tokenization;

/// <summary>A tokenizer.json normalizer. Offsets are not tracked: masks are built from per-piece encodings.</summary>
public abstract class TextNormalizer
{
    public abstract string Normalize(string s);

    // Parses the "normalizer" object of tokenizer.json (null = none).
    public static TextNormalizer? FromJson(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = e.Str("type");
        return type switch
        {
            "Sequence" => new SequenceNormalizer(e.Prop("normalizers").Array("normalizers").Select(FromJson).OfType<TextNormalizer>().ToArray()),
            "NFC" => new FuncNormalizer(UnicodeNfc.Nfc),
            "NFD" => new FuncNormalizer(UnicodeNfc.Nfd),
            "Lowercase" => new FuncNormalizer(s => s.ToLowerInvariant()),
            "Strip" => new StripNormalizer(Bool(e, "strip_left", true), Bool(e, "strip_right", true)),
            "Prepend" => new PrependNormalizer(e.Str("prepend")),
            "Replace" => new ReplaceNormalizer(Pattern.FromJson(e.Prop("pattern")), e.Str("content")),
            _ => throw new NotSupportedException($"tokenizer.json normalizer type '{type}' is not supported"),
        };
    }

    internal static bool Bool(JsonElement e, string name, bool fallback) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
}

sealed class SequenceNormalizer(TextNormalizer[] items) : TextNormalizer
{
    public override string Normalize(string s)
    {
        foreach (var n in items) s = n.Normalize(s);
        return s;
    }
}

sealed class FuncNormalizer(Func<string, string> f) : TextNormalizer
{
    public override string Normalize(string s) => f(s);
}

// HF strips Unicode White_Space, which is what char.IsWhiteSpace tests.
sealed class StripNormalizer(bool left, bool right) : TextNormalizer
{
    public override string Normalize(string s) => left && right ? s.Trim() : left ? s.TrimStart() : right ? s.TrimEnd() : s;
}

// HF prepends only to a non-empty string.
sealed class PrependNormalizer(string prefix) : TextNormalizer
{
    public override string Normalize(string s) => s.Length == 0 ? s : prefix + s;
}

sealed class ReplaceNormalizer(Pattern pattern, string content) : TextNormalizer
{
    public override string Normalize(string s) => pattern.Replace(s, content);
}

/// <summary>A tokenizer.json pattern: {"String": literal} or {"Regex": Oniguruma regex}.</summary>
public sealed class Pattern
{
    public string? Literal { get; }
    public Regex? Regex { get; }

    Pattern(string? literal, Regex? regex) { Literal = literal; Regex = regex; }

    public static Pattern FromJson(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Object && e.TryGetProperty("String", out var s)) return new Pattern(s.AsString("String"), null);
        if (e.ValueKind == JsonValueKind.Object && e.TryGetProperty("Regex", out var r)) return new Pattern(null, OnigRegex.Compile(r.AsString("Regex")));
        throw new FormatException($"pattern {JsonFields.Short(e)} is neither {{\"String\": ...}} nor {{\"Regex\": ...}}");
    }

    public static Pattern FromRegex(string regex) => new(null, OnigRegex.Compile(regex));

    public string Replace(string s, string content) =>
        Literal is not null ? (Literal.Length == 0 ? s : s.Replace(Literal, content, StringComparison.Ordinal)) : Regex!.Replace(s, content);
}
