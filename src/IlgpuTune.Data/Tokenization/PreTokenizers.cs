using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace IlgpuTune.Data.Tokenization;

/// <summary>A pre-tokenizer piece; <see cref="First"/> = it starts at the beginning of the input (Metaspace "first").</summary>
public readonly record struct Piece(string Text, bool First);

/// <summary>A tokenizer.json pre_tokenizer: splits (and for ByteLevel, rewrites) pieces.</summary>
public abstract class PreTokenizer
{
    public abstract void Split(Piece piece, List<Piece> output);

    public static PreTokenizer? FromJson(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = e.Str("type");
        return type switch
        {
            "Sequence" => new SequencePreTokenizer(e.Prop("pretokenizers").Array("pretokenizers").Select(FromJson).OfType<PreTokenizer>().ToArray()),
            "Split" => new SplitPreTokenizer(Pattern.FromJson(e.Prop("pattern")), ParseBehavior(e.Str("behavior")),
                TextNormalizer.Bool(e, "invert", false)),
            "ByteLevel" => new ByteLevelPreTokenizer(TextNormalizer.Bool(e, "add_prefix_space", true), TextNormalizer.Bool(e, "use_regex", true)),
            "Metaspace" => MetaspacePreTokenizer.Create(e),
            "Digits" => new SplitPreTokenizer(Pattern.FromRegex(@"\p{N}"), TextNormalizer.Bool(e, "individual_digits", false)
                ? SplitBehavior.Isolated : SplitBehavior.Contiguous, false),
            "WhitespaceSplit" => new SplitPreTokenizer(Pattern.FromRegex(@"\s+"), SplitBehavior.Removed, false),
            "Whitespace" => new SplitPreTokenizer(Pattern.FromRegex(@"\w+|[^\w\s]+"), SplitBehavior.Removed, true),
            _ => throw new NotSupportedException($"tokenizer.json pre_tokenizer type '{type}' is not supported"),
        };
    }

    static SplitBehavior ParseBehavior(string s) => s switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new NotSupportedException($"tokenizer.json split behavior '{s}' is not supported"),
    };

    // Cuts piece.Text at the given spans (match = true) per HF SplitDelimiterBehavior.
    internal static void SplitSpans(Piece piece, List<(int Start, int Length)> matches, SplitBehavior behavior, bool invert, List<Piece> output)
    {
        string s = piece.Text;
        var spans = new List<(int Start, int End, bool Match)>(matches.Count * 2 + 1);
        int pos = 0;
        foreach (var (start, length) in matches)
        {
            if (length == 0) continue;
            if (start > pos) spans.Add((pos, start, invert));
            spans.Add((start, start + length, !invert));
            pos = start + length;
        }
        if (pos < s.Length) spans.Add((pos, s.Length, invert));

        // The folds of tokenizers' NormalizedString::split: of consecutive delimiters only the first one merges.
        var parts = new List<(int Start, int End)>(spans.Count);
        bool previousMatch = false;
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var (a, b, m) in spans) if (!m) parts.Add((a, b));
                break;
            case SplitBehavior.Isolated:
                foreach (var (a, b, _) in spans) parts.Add((a, b));
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var (a, b, m) in spans)
                {
                    if (m && !previousMatch && parts.Count > 0) parts[^1] = (parts[^1].Start, b);
                    else parts.Add((a, b));
                    previousMatch = m;
                }
                break;
            case SplitBehavior.MergedWithNext:
                for (int i = spans.Count - 1; i >= 0; i--)
                {
                    var (a, b, m) = spans[i];
                    if (m && !previousMatch && parts.Count > 0) parts[^1] = (a, parts[^1].End);
                    else parts.Add((a, b));
                    previousMatch = m;
                }
                parts.Reverse();
                break;
            case SplitBehavior.Contiguous:
                foreach (var (a, b, m) in spans)
                {
                    if (m == previousMatch && parts.Count > 0) parts[^1] = (parts[^1].Start, b);
                    else parts.Add((a, b));
                    previousMatch = m;
                }
                break;
        }
        for (int i = 0; i < parts.Count; i++)
            output.Add(new Piece(s[parts[i].Start..parts[i].End], piece.First && parts[i].Start == 0));
    }
}

public enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

sealed class SequencePreTokenizer(PreTokenizer[] items) : PreTokenizer
{
    public PreTokenizer[] Items => items;

    public override void Split(Piece piece, List<Piece> output)
    {
        var cur = new List<Piece> { piece };
        var next = new List<Piece>();
        foreach (var p in items)
        {
            next.Clear();
            foreach (var x in cur) p.Split(x, next);
            (cur, next) = (next, cur);
        }
        output.AddRange(cur);
    }
}

sealed class SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert) : PreTokenizer
{
    public Regex? Regex => pattern.Regex;
    public SplitBehavior Behavior => behavior;
    public bool Invert => invert;

    public override void Split(Piece piece, List<Piece> output)
    {
        var matches = new List<(int, int)>();
        if (pattern.Literal is { } lit)
        {
            if (lit.Length > 0)
                for (int i = piece.Text.IndexOf(lit, StringComparison.Ordinal); i >= 0; i = piece.Text.IndexOf(lit, i + lit.Length, StringComparison.Ordinal))
                    matches.Add((i, lit.Length));
        }
        else OnigRegex.Matches(pattern.Regex!, piece.Text, matches);
        SplitSpans(piece, matches, behavior, invert, output);
    }
}

// Byte-level: optional GPT-2 regex split, then every piece is rewritten as its UTF-8 bytes in the GPT-2 alphabet.
sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    public bool AddPrefixSpace => addPrefixSpace;
    public bool UseRegex => useRegex;
    public static readonly Regex Gpt2 = OnigRegex.Compile(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+");

    public override void Split(Piece piece, List<Piece> output)
    {
        if (addPrefixSpace && !piece.Text.StartsWith(' ')) piece = piece with { Text = " " + piece.Text };
        var parts = new List<Piece>();
        if (useRegex)
        {
            var matches = new List<(int, int)>();
            OnigRegex.Matches(Gpt2, piece.Text, matches);
            SplitSpans(piece, matches, SplitBehavior.Isolated, false, parts);
        }
        else parts.Add(piece);
        foreach (var p in parts) output.Add(p with { Text = ByteLevel.Encode(p.Text) });
    }
}

sealed class MetaspacePreTokenizer(char replacement, string prependScheme, bool split) : PreTokenizer
{
    public static MetaspacePreTokenizer Create(JsonElement e)
    {
        char rep = (e.TryGetProperty("replacement", out var r) ? r : e.Prop("str_rep")).AsChar("replacement");
        string scheme = e.TryGetProperty("prepend_scheme", out var ps) ? ps.AsString("prepend_scheme")
            : TextNormalizer.Bool(e, "add_prefix_space", true) ? "always" : "never";
        return new MetaspacePreTokenizer(rep, scheme, TextNormalizer.Bool(e, "split", true));
    }

    public override void Split(Piece piece, List<Piece> output)
    {
        string s = piece.Text.Replace(' ', replacement);
        bool prepend = prependScheme == "always" || prependScheme == "first" && piece.First;
        if (prepend && !s.StartsWith(replacement)) s = replacement + s;
        if (!split)
        {
            output.Add(piece with { Text = s });
            return;
        }
        var matches = new List<(int, int)>();
        for (int i = s.IndexOf(replacement); i >= 0; i = s.IndexOf(replacement, i + 1)) matches.Add((i, 1));
        SplitSpans(piece with { Text = s }, matches, SplitBehavior.MergedWithNext, false, output);
    }
}

/// <summary>
/// Oniguruma-compatible matching with .NET Regex. .NET matches UTF-16 units, so a code point outside the BMP would be two
/// "characters" of category Cs; we match over a copy in which each such code point is one BMP stand-in of the same general
/// category, and map the spans back.
/// </summary>
public static class OnigRegex
{
    static readonly char[] StandIn = BuildStandIns();

    static char[] BuildStandIns()
    {
        var t = new char[32];
        for (int c = 0xFFFF; c >= 0x100; c--)
        {
            if (char.IsSurrogate((char)c) || char.IsWhiteSpace((char)c)) continue;
            t[(int)CharUnicodeInfo.GetUnicodeCategory((char)c)] = (char)c;
        }
        return t;
    }

    public static Regex Compile(string pattern) =>
        new(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    public static void Matches(Regex re, string s, List<(int Start, int Length)> output)
    {
        int firstSurrogate = s.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (firstSurrogate < 0)
        {
            foreach (var m in re.EnumerateMatches(s)) output.Add((m.Index, m.Length));
            return;
        }
        var probe = new char[s.Length];
        var map = new int[s.Length + 1];   // probe index -> s index
        int n = 0;
        for (int i = 0; i < s.Length; i++, n++)
        {
            map[n] = i;
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                int cp = char.ConvertToUtf32(s[i], s[i + 1]);
                char stand = StandIn[(int)CharUnicodeInfo.GetUnicodeCategory(cp)];
                probe[n] = stand == '\0' ? '\uE000' : stand;
                i++;
            }
            else probe[n] = s[i];
        }
        map[n] = s.Length;
        foreach (var m in re.EnumerateMatches(probe.AsSpan(0, n)))
            output.Add((map[m.Index], map[m.Index + m.Length] - map[m.Index]));
    }
}
