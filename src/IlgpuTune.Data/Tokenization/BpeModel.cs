using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// The BPE model of tokenizer.json (tokenizers/src/models/bpe): symbols start as single code points (or byte-fallback
/// bytes, or unk), then the adjacent pair of lowest merge rank is merged, leftmost first, until none applies.
/// </summary>
public sealed class BpeModel
{
    readonly Dictionary<string, int> _vocab;
    readonly Dictionary<int, int> _codePointIds = [];      // single-code-point tokens, the common initial symbols
    readonly Dictionary<long, (int Rank, int Id)> _merges;
    readonly int[] _byteIds = new int[256];                 // <0xXX> ids for byte_fallback, -1 if absent
    readonly int? _unkId;
    readonly bool _fuseUnk, _byteFallback, _ignoreMerges;
    readonly string? _prefix, _suffix;
    readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    const int CacheCapacity = 1 << 18;

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    BpeModel(Dictionary<string, int> vocab, Dictionary<long, (int, int)> merges, string? unk, bool fuseUnk, bool byteFallback,
        bool ignoreMerges, string? prefix, string? suffix)
    {
        _vocab = vocab;
        _merges = merges;
        _fuseUnk = fuseUnk;
        _byteFallback = byteFallback;
        _ignoreMerges = ignoreMerges;
        _prefix = string.IsNullOrEmpty(prefix) ? null : prefix;
        _suffix = string.IsNullOrEmpty(suffix) ? null : suffix;
        if (unk is not null && vocab.TryGetValue(unk, out int u)) _unkId = u;
        foreach (var (tok, id) in vocab)
        {
            var e = tok.EnumerateRunes();
            if (e.MoveNext() && !e.MoveNext()) _codePointIds[Rune.GetRuneAt(tok, 0).Value] = id;
        }
        for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
    }

    public static BpeModel FromJson(JsonElement model)
    {
        string type = model.TryGetProperty("type", out var t) ? t.AsString("type") : "BPE";
        if (type != "BPE") throw new NotSupportedException($"tokenizer.json model type '{type}' is not supported (BPE only)");
        if (model.TryGetProperty("dropout", out var d) && d.ValueKind == JsonValueKind.Number && d.GetDouble() > 0)
            throw new NotSupportedException("BPE dropout is a training-time option; tokenizer.json with dropout > 0 is not supported");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in model.Prop("vocab").Object("vocab")) vocab[p.Name] = p.Value.AsId($"vocab entry '{p.Name}'");
        var merges = new Dictionary<long, (int, int)>();
        int rank = 0;
        foreach (var m in model.Prop("merges").Array("merges"))
        {
            string a, b;
            if (m.ValueKind == JsonValueKind.Array)
            {
                if (m.GetArrayLength() != 2 || m[0].ValueKind != JsonValueKind.String || m[1].ValueKind != JsonValueKind.String)
                    throw new FormatException($"merge #{rank} {JsonFields.Short(m)} is not a pair of strings");
                a = m[0].GetString()!;
                b = m[1].GetString()!;
            }
            else
            {
                string s = m.AsString($"merge #{rank}");
                int sp = s.IndexOf(' ');
                if (sp < 0) throw new FormatException($"merge #{rank} '{s}' has no space");
                a = s[..sp];
                b = s[(sp + 1)..];
            }
            if (!vocab.TryGetValue(a, out int ia) || !vocab.TryGetValue(b, out int ib) || !vocab.TryGetValue(a + b, out int ic))
                throw new FormatException($"merge #{rank} ('{a}', '{b}') refers to a token missing from the vocab");
            merges.TryAdd(Key(ia, ib), (rank, ic));
            rank++;
        }
        string? Str(string name) => model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        return new BpeModel(vocab, merges, Str("unk_token"), TextNormalizer.Bool(model, "fuse_unk", false),
            TextNormalizer.Bool(model, "byte_fallback", false), TextNormalizer.Bool(model, "ignore_merges", false),
            Str("continuing_subword_prefix"), Str("end_of_word_suffix"));
    }

    static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    public void Tokenize(string word, List<int> ids)
    {
        if (word.Length == 0) return;
        if (_cache.TryGetValue(word, out var cached))
        {
            ids.AddRange(cached);
            return;
        }
        var result = TokenizeUncached(word);
        if (_cache.Count < CacheCapacity) _cache.TryAdd(word, result);
        ids.AddRange(result);
    }

    int[] TokenizeUncached(string word)
    {
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole)) return [whole];
        var sym = new List<int>(word.Length);
        int unkRun = 0;   // >0 while fusing consecutive unknown characters
        int runeIndex = 0, runeCount = _suffix is null ? -1 : CountRunes(word);
        foreach (var r in word.EnumerateRunes())
        {
            int id = LookupSymbol(r, runeIndex == 0, runeIndex == runeCount - 1);
            runeIndex++;
            if (id >= 0)
            {
                sym.Add(id);
                unkRun = 0;
                continue;
            }
            if (_byteFallback && TryAddBytes(r, sym))
            {
                unkRun = 0;
                continue;
            }
            if (_unkId is int unk)
            {
                if (!(_fuseUnk && unkRun > 0)) sym.Add(unk);
                unkRun++;
            }
        }
        return Merge(sym);
    }

    static int CountRunes(string s)
    {
        int n = 0;
        foreach (var _ in s.EnumerateRunes()) n++;
        return n;
    }

    int LookupSymbol(Rune r, bool first, bool last)
    {
        if (_prefix is null && _suffix is null)
            return _codePointIds.TryGetValue(r.Value, out int id) ? id : -1;
        string s = r.ToString();
        if (!first && _prefix is not null) s = _prefix + s;
        if (last && _suffix is not null) s += _suffix;
        return _vocab.TryGetValue(s, out int id2) ? id2 : -1;
    }

    bool TryAddBytes(Rune r, List<int> sym)
    {
        Span<byte> buf = stackalloc byte[4];
        int n = r.EncodeToUtf8(buf);
        for (int i = 0; i < n; i++) if (_byteIds[buf[i]] < 0) return false;
        for (int i = 0; i < n; i++) sym.Add(_byteIds[buf[i]]);
        return true;
    }

    // Word::merge_all: a heap of (rank, position); stale entries are skipped when the pair no longer yields that id.
    int[] Merge(List<int> sym)
    {
        int n = sym.Count;
        if (n < 2) return [.. sym];
        var c = sym.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var heap = new PriorityQueue<(int Pos, int NewId), (int Rank, int Pos)>(n);
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Key(c[i], c[i + 1]), out var m)) heap.Enqueue((i, m.Id), (m.Rank, i));
        while (heap.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!alive[pos] || next[pos] < 0) continue;
            int right = next[pos];
            if (!_merges.TryGetValue(Key(c[pos], c[right]), out var cur) || cur.Id != top.NewId) continue;
            c[pos] = cur.Id;
            alive[right] = false;
            next[pos] = next[right];
            if (next[pos] >= 0) prev[next[pos]] = pos;
            if (prev[pos] >= 0 && _merges.TryGetValue(Key(c[prev[pos]], c[pos]), out var ml))
                heap.Enqueue((prev[pos], ml.Id), (ml.Rank, prev[pos]));
            if (next[pos] >= 0 && _merges.TryGetValue(Key(c[pos], c[next[pos]]), out var mr))
                heap.Enqueue((pos, mr.Id), (mr.Rank, pos));
        }
        var outp = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i]) outp.Add(c[i]);
        return [.. outp];
    }
}
