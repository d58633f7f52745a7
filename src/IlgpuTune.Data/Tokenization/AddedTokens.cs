using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>One entry of tokenizer.json "added_tokens".</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord = false, bool LStrip = false,
    bool RStrip = false, bool Normalized = false)
{
    public static AddedToken FromJson(JsonElement e) => new(e.Prop("id").AsId("added token id"), e.Str("content"),
        TextNormalizer.Bool(e, "special", false), TextNormalizer.Bool(e, "single_word", false), TextNormalizer.Bool(e, "lstrip", false),
        TextNormalizer.Bool(e, "rstrip", false), TextNormalizer.Bool(e, "normalized", false));
}

/// <summary>A text segment between added tokens (TokenId &lt; 0) or an added token (Text = its content).</summary>
public readonly record struct Segment(string Text, int TokenId, int Start);

/// <summary>
/// Leftmost-longest matching of added tokens (tokenizers AddedVocabulary::find_matches): a match that fails single_word is
/// skipped; lstrip/rstrip absorb neighbouring whitespace.
/// </summary>
public sealed class AddedTokenMatcher
{
    sealed class Node
    {
        public Dictionary<char, Node>? Children;
        public AddedToken? Token;
    }

    readonly Node _root = new();
    readonly System.Buffers.SearchValues<char> _firstChars;   // a match can only start at one of these
    public bool IsEmpty { get; private set; } = true;

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens, Func<string, string>? normalize = null)
    {
        foreach (var t in tokens)
        {
            string content = normalize is null ? t.Content : normalize(t.Content);
            if (content.Length == 0) continue;
            var n = _root;
            foreach (char ch in content)
            {
                n.Children ??= [];
                if (!n.Children.TryGetValue(ch, out var child)) n.Children[ch] = child = new Node();
                n = child;
            }
            n.Token ??= t;
            IsEmpty = false;
        }
        _firstChars = System.Buffers.SearchValues.Create(_root.Children?.Keys.ToArray() ?? []);
    }

    public void Split(string text, int offset, List<Segment> output)
    {
        if (IsEmpty)
        {
            output.Add(new Segment(text, -1, offset));
            return;
        }
        int segStart = 0, i = 0;
        while (i < text.Length)
        {
            int skip = text.AsSpan(i).IndexOfAny(_firstChars);
            if (skip < 0) break;
            i += skip;
            var (tok, end) = LongestAt(text, i);
            if (tok is null)
            {
                i++;
                continue;
            }
            int start = i;
            i = end;
            if (tok.SingleWord && !(IsWordBoundary(text, start - 1) && IsWordBoundary(text, end))) continue;
            if (tok.LStrip)
                while (start > segStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (tok.RStrip)
                while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > segStart) output.Add(new Segment(text[segStart..start], -1, offset + segStart));
            output.Add(new Segment(tok.Content, tok.Id, offset + start));
            segStart = i = end;
        }
        if (segStart < text.Length) output.Add(new Segment(text[segStart..], -1, offset + segStart));
    }

    static bool IsWordBoundary(string s, int i) => i < 0 || i >= s.Length || !(char.IsLetterOrDigit(s[i]) || s[i] == '_');

    (AddedToken? Token, int End) LongestAt(string s, int i)
    {
        AddedToken? best = null;
        int bestEnd = -1;
        var n = _root;
        for (int j = i; j < s.Length && n.Children is not null && n.Children.TryGetValue(s[j], out n); j++)
            if (n.Token is not null)
            {
                best = n.Token;
                bestEnd = j + 1;
            }
        return (best, bestEnd);
    }
}
