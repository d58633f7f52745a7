// Incremental detokenization of an answer: after each token the whole answer is decoded again (so byte-level pieces of
// one character join up) and only text that can no longer change is released: never a trailing U+FFFD (an incomplete
// UTF-8 sequence) nor a tail that could be the start of a stop word. A stop word ends the answer and is cut from it.
namespace IlgpuTune.Model.Generation;

public sealed class TextStream(Func<IReadOnlyList<int>, string> decode, IReadOnlyList<string> stopWords)
{
    private readonly List<int> _ids = [];
    private string _text = "";
    private int _released;

    /// <summary>The answer so far (the stop word cut once matched).</summary>
    public string Text => StopWord is null ? _text : _text[..StopIndex];

    /// <summary>The stop word that ended the answer, or null.</summary>
    public string? StopWord { get; private set; }

    private int StopIndex { get; set; }

    /// <summary>Adds a token; returns the text released by it (possibly empty).</summary>
    public string Push(int id)
    {
        if (StopWord is not null) throw new InvalidOperationException("the answer already ended with a stop word");
        _ids.Add(id);
        _text = decode(_ids);
        foreach (var word in stopWords)
        {
            int at = StopWordStart(_text, word);
            if (at < 0) continue;
            (StopWord, StopIndex) = (word, Math.Max(at, _released));
            return Release(StopIndex);
        }
        int end = _text.Length;
        while (end > _released && _text[end - 1] == '\uFFFD') end--;
        end -= HeldForStopWord(_text.AsSpan(0, end));
        if (end > 0 && char.IsHighSurrogate(_text[end - 1])) end--;
        return Release(end);
    }

    /// <summary>The text still held back (at the end of generation without a stop word).</summary>
    public string Flush() => StopWord is null ? Release(_text.Length) : "";

    private string Release(int end)
    {
        if (end <= _released) return "";
        string s = _text[_released..end];
        _released = end;
        return s;
    }

    // Length of the longest tail of `text` that is a proper prefix of a stop word.
    private int HeldForStopWord(ReadOnlySpan<char> text)
    {
        int held = 0;
        foreach (var word in stopWords)
            for (int n = Math.Min(word.Length - 1, text.Length); n > held; n--)
                if (text[^n..].SequenceEqual(word.AsSpan(0, n)))
                {
                    held = n;
                    break;
                }
        return held;
    }

    /// <summary>
    /// Where <paramref name="word"/> starts if <paramref name="text"/> ends with it, ignoring '\r' and '\n' on both sides
    /// (XTuner's StopWordStoppingCriteria strips them from the text); -1 if it does not.
    /// </summary>
    public static int StopWordStart(string text, string word)
    {
        int t = text.Length, matched = 0;
        for (int w = word.Length - 1; w >= 0; w--)
        {
            if (word[w] is '\r' or '\n') continue;
            while (t > 0 && text[t - 1] is '\r' or '\n') t--;
            if (t == 0 || text[t - 1] != word[w]) return -1;
            t--;
            matched++;
        }
        return matched == 0 ? -1 : t;
    }
}
