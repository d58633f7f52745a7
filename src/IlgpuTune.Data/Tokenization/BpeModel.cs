using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// The BPE model of tokenizer.json (tokenizers/src/models/bpe): symbols start as single code points (or byte-fallback
/// bytes, or unk), then the adjacent pair of lowest merge rank is merged, leftmost first, until none applies.
/// Byte-level vocabularies (GPT-2 alphabet) also encode straight from a piece's UTF-8 bytes (<see cref="TokenizeByteLevel"/>),
/// with no intermediate strings; the merge loop runs over spans with a (rank, position) heap and allocates nothing.
/// </summary>
public sealed class BpeModel
{
    readonly Dictionary<string, int> _vocab;
    readonly Dictionary<int, int> _codePointIds = [];      // single-code-point tokens, the common initial symbols
    readonly MergeTable _merges;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    readonly int[]? _byteLevelIds;                         // id of the GPT-2 character of each byte; null unless all 256 exist
    readonly int[] _byteIds = new int[256];                 // <0xXX> ids for byte_fallback, -1 if absent
    readonly int? _unkId;
    readonly bool _fuseUnk, _byteFallback, _ignoreMerges;
    readonly string? _prefix, _suffix;
    readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    const int CacheCapacity = 1 << 18;

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    /// <summary>True when <see cref="TokenizeByteLevel"/> applies: every byte has its GPT-2 character in the vocab and no
    /// continuing-subword prefix or end-of-word suffix is set.</summary>
    public bool SupportsByteLevel => _byteLevelIds is not null;

    BpeModel(Dictionary<string, int> vocab, Dictionary<long, (int, int)> merges, string? unk, bool fuseUnk, bool byteFallback,
        bool ignoreMerges, string? prefix, string? suffix)
    {
        _vocab = vocab;
        _merges = new MergeTable(merges);
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
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
        if (_prefix is null && _suffix is null)
        {
            var ids = new int[256];
            for (int b = 0; b < 256; b++) ids[b] = _codePointIds.TryGetValue(ByteLevel.ByteToChar[b], out int id) ? id : -1;
            if (Array.IndexOf(ids, -1) < 0) _byteLevelIds = ids;
        }
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

    /// <summary>
    /// Appends the ids of <paramref name="piece"/> written as UTF-8 bytes in the GPT-2 alphabet — what
    /// Tokenize(ByteLevel.Encode(piece)) appends, without building that string. Requires <see cref="SupportsByteLevel"/>.
    /// No word cache: measured on fresh text, a concurrent cache of pieces cost more (hashing, inserts, GC of its entries)
    /// than the allocation-free merge it saves.
    /// </summary>
    [System.Runtime.CompilerServices.SkipLocalsInit]
    public void TokenizeByteLevel(ReadOnlySpan<char> piece, List<int> ids)
    {
        if (piece.IsEmpty) return;
        int maxBytes = Encoding.UTF8.GetMaxByteCount(piece.Length);
        byte[]? rented = maxBytes > 1024 ? ArrayPool<byte>.Shared.Rent(maxBytes) : null;
        Span<byte> bytes = rented ?? stackalloc byte[1024];
        int n = Encoding.UTF8.GetBytes(piece, bytes);
        int[]? symRented = n > 256 ? ArrayPool<int>.Shared.Rent(n) : null;
        Span<int> sym = symRented is null ? stackalloc int[256] : symRented;
        sym = sym[..n];
        var table = _byteLevelIds!;
        for (int i = 0; i < n; i++) sym[i] = table[bytes[i]];
        if (_ignoreMerges && WholeWordId(bytes[..n]) is int whole)
        {
            sym[0] = whole;
            sym = sym[..1];
        }
        else sym = sym[..MergeInPlace(sym)];
        foreach (int id in sym) ids.Add(id);
        if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        if (symRented is not null) ArrayPool<int>.Shared.Return(symRented);
    }

    // The vocab id of the whole byte-level word (ignore_merges), looked up without building its string.
    [System.Runtime.CompilerServices.SkipLocalsInit]
    int? WholeWordId(ReadOnlySpan<byte> bytes)
    {
        char[]? rented = bytes.Length > 512 ? ArrayPool<char>.Shared.Rent(bytes.Length) : null;
        Span<char> chars = rented ?? stackalloc char[512];
        chars = chars[..bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteLevel.ByteToChar[bytes[i]];
        int? id = _vocabBySpan.TryGetValue(chars, out int w) ? w : null;
        if (rented is not null) ArrayPool<char>.Shared.Return(rented);
        return id;
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

    int[] Merge(List<int> sym)
    {
        var c = sym.ToArray();
        return c.Length < 2 ? c : c[..MergeInPlace(c)];
    }

    // Word::merge_all over c (symbol ids, rewritten in place; returns the merged length): a min-heap of rank << 32 | pos,
    // and per position the rank and result of the pair that starts there now (rank[pos] = -1: none), so a popped entry
    // is live exactly when it still matches — no second look-up of the pair.
    [System.Runtime.CompilerServices.SkipLocalsInit]
    int MergeInPlace(Span<int> c)
    {
        int n = c.Length;
        if (n < 2) return n;
        const int StackLimit = 128;
        int[]? rented = n > StackLimit ? ArrayPool<int>.Shared.Rent(4 * n) : null;
        Span<int> work = rented ?? stackalloc int[4 * StackLimit];
        Span<int> prev = work[..n], next = work.Slice(n, n), rank = work.Slice(2 * n, n), merged = work.Slice(3 * n, n);
        long[]? heapRented = n > StackLimit ? ArrayPool<long>.Shared.Rent(3 * n) : null;
        Span<long> heap = heapRented ?? stackalloc long[3 * StackLimit];
        int size = 0;
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            rank[i] = -1;
        }
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGet(c[i], c[i + 1], out rank[i], out merged[i])) Push(heap, ref size, (long)rank[i] << 32 | (uint)i);
            else rank[i] = -1;
        while (size > 0)
        {
            long top = Pop(heap, ref size);
            int pos = (int)(uint)top;
            if (rank[pos] != (int)(top >> 32)) continue;
            int right = next[pos], id = merged[pos];
            c[pos] = id;
            rank[right] = -1;
            int after = next[right];
            next[pos] = after;
            if (after >= 0) prev[after] = pos;
            int before = prev[pos];
            if (before >= 0)
            {
                if (_merges.TryGet(c[before], id, out rank[before], out merged[before])) Push(heap, ref size, (long)rank[before] << 32 | (uint)before);
                else rank[before] = -1;
            }
            if (after >= 0 && _merges.TryGet(id, c[after], out rank[pos], out merged[pos])) Push(heap, ref size, (long)rank[pos] << 32 | (uint)pos);
            else rank[pos] = -1;
        }
        int m = 0;
        for (int i = 0; i >= 0; i = next[i]) c[m++] = c[i];
        if (rented is not null) ArrayPool<int>.Shared.Return(rented);
        if (heapRented is not null) ArrayPool<long>.Shared.Return(heapRented);
        return m;
    }

    static void Push(Span<long> heap, ref int size, long v)
    {
        int i = size++;
        while (i > 0)
        {
            int parent = (i - 1) >> 1;
            if (heap[parent] <= v) break;
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = v;
    }

    static long Pop(Span<long> heap, ref int size)
    {
        long top = heap[0], last = heap[--size];
        int i = 0;
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= size) break;
            if (child + 1 < size && heap[child + 1] < heap[child]) child++;
            if (heap[child] >= last) break;
            heap[i] = heap[child];
            i = child;
        }
        heap[i] = last;
        return top;
    }
}

/// <summary>
/// The merges as an open-addressing hash of (left id, right id) → (rank, merged id), probed linearly; key and value share
/// one 16-byte slot, so a look-up touches one cache line.
/// </summary>
sealed class MergeTable
{
    struct Slot
    {
        public long Key;     // left << 32 | right, -1 = empty
        public int Rank, Id;
    }

    readonly Slot[] _slots;
    readonly int _shift;

    public MergeTable(Dictionary<long, (int Rank, int Id)> merges)
    {
        int cap = 16;
        while (cap < merges.Count + merges.Count / 2) cap <<= 1;
        _slots = new Slot[cap];
        for (int i = 0; i < cap; i++) _slots[i].Key = -1;
        _shift = 64 - System.Numerics.BitOperations.Log2((uint)cap);
        foreach (var (key, (rank, id)) in merges)
        {
            int i = Index(key);
            while (_slots[i].Key != -1) i = (i + 1) & (cap - 1);
            _slots[i] = new Slot { Key = key, Rank = rank, Id = id };
        }
    }

    int Index(long key) => (int)((ulong)key * 0x9E3779B97F4A7C15UL >> _shift);

    public bool TryGet(int left, int right, out int rank, out int id)
    {
        long key = (long)left << 32 | (uint)right;
        var slots = _slots;
        int mask = slots.Length - 1;
        for (int i = Index(key); ; i = (i + 1) & mask)
        {
            ref var s = ref slots[i];
            if (s.Key == key)
            {
                (rank, id) = (s.Rank, s.Id);
                return true;
            }
            if (s.Key == -1)
            {
                (rank, id) = (-1, 0);
                return false;
            }
        }
    }
}
