using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;

namespace IlgpuTune.Data.Packing;

/// <summary>
/// The tokenized, packed dataset on disk, memory-mapped. Layout (little endian): "ITPK", version, rows, samples,
/// droppedNoLoss, truncated, maxLength, idBytes | labelsAsIds &lt;&lt; 8, tokens (i64), then i64 tokenStart[rows+1],
/// i64 sampleStart[rows+1], i32 cumulative[rows+samples], i32 sampleIndex[samples], ids[tokens] in idBytes (2, 3 or 4:
/// the narrowest width that holds every id), then the labels: a bit per token (1 = the label is the token's id,
/// 0 = -100) when every label is one of those (labelsAsIds = 1), else i32 labels[tokens]. Position ids are not stored:
/// they restart at 0 in every sample. About 3.1 bytes per token for a 151k vocab.
/// Written to a temporary file and renamed, so a crash never leaves a half-written cache under the key.
/// </summary>
public sealed class PackedCache : IDisposable
{
    const int Magic = 0x4B505449;   // "ITPK"
    const int Version = 2;
    const int HeaderBytes = 8 * 4 + 8;

    readonly MemoryMappedFile _file;
    readonly MemoryMappedViewAccessor _view;
    readonly long _tokens, _idsAt, _labelsAt, _cuAt, _sampleAt, _tokenStartAt, _sampleStartAt;
    readonly int _idBytes;
    readonly bool _labelsAsIds;

    public PackStats Stats { get; }
    public int RowCount => Stats.Rows;

    PackedCache(string path)
    {
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        if (_view.Capacity < HeaderBytes || _view.ReadInt32(0) != Magic || _view.ReadInt32(4) != Version)
        {
            Dispose();
            throw new InvalidDataException($"{path} is not a packed dataset cache v{Version}");
        }
        int rows = _view.ReadInt32(8), samples = _view.ReadInt32(12), layout = _view.ReadInt32(28);
        Stats = new PackStats(rows, samples, _view.ReadInt32(16), _view.ReadInt32(20), _view.ReadInt64(32), _view.ReadInt32(24));
        _tokens = Stats.Tokens;
        _idBytes = layout & 0xFF;
        _labelsAsIds = (layout >> 8 & 1) != 0;
        _tokenStartAt = HeaderBytes;
        _sampleStartAt = _tokenStartAt + 8L * (rows + 1);
        _cuAt = _sampleStartAt + 8L * (rows + 1);
        _sampleAt = _cuAt + 4L * (rows + samples);
        _idsAt = _sampleAt + 4L * samples;
        _labelsAt = _idsAt + _idBytes * _tokens;
        long end = _labelsAt + (_labelsAsIds ? (_tokens + 7) / 8 : 4 * _tokens);
        if (_idBytes is < 2 or > 4 || end > new FileInfo(path).Length)
        {
            Dispose();
            throw new InvalidDataException($"{path}: packed dataset cache is truncated or corrupt");
        }
    }

    /// <summary>Cache key: SHA-256 over the data files' contents, tokenizer files, template, format and packing options.</summary>
    /// <param name="pack">false = one sample per row (the key differs from the packed dataset's).</param>
    /// <param name="memoDir">
    /// where each file's content hash is remembered with its size and modification time (as HF datasets fingerprint local
    /// files by path and mtime), so a cache hit does not read a large dataset again; null = hash every file.
    /// </param>
    public static string Key(IEnumerable<string> dataFiles, IEnumerable<string> tokenizerFiles, string template, string format,
        int maxLength, bool shuffleBeforePack, ulong seed, bool pack = true, string? memoDir = null)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string s) => h.AppendData(Encoding.UTF8.GetBytes(s + "\n"));
        Add($"ilgpu-tune packed v{Version}|{template}|{format}|{maxLength}|{shuffleBeforePack}|{seed}" + (pack ? "" : "|unpacked"));
        foreach (var f in dataFiles.Concat(["--"]).Concat(tokenizerFiles))
        {
            if (f == "--") { Add(f); continue; }
            Add(Path.GetFileName(f) + ":" + ContentHash(f, memoDir));
        }
        return Convert.ToHexString(h.GetHashAndReset()).ToLowerInvariant();
    }

    // The file's SHA-256, from memoDir/file-hashes when its size and modification time are those it was hashed at.
    static string ContentHash(string file, string? memoDir)
    {
        var info = new FileInfo(file);
        string stamp = $"{info.Length} {info.LastWriteTimeUtc.Ticks} ";
        string? memo = memoDir is null ? null : Path.Combine(memoDir, "file-hashes",
            Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Path.GetFullPath(file))))[..32].ToLowerInvariant());
        try
        {
            if (memo is not null && File.Exists(memo) && File.ReadAllText(memo) is { } line && line.StartsWith(stamp, StringComparison.Ordinal))
                return line[stamp.Length..];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        string hash;
        using (var s = File.OpenRead(file))
            hash = Convert.ToHexString(SHA256.HashData(s));
        if (memo is not null && new FileInfo(file) is var after && after.Length == info.Length && after.LastWriteTimeUtc == info.LastWriteTimeUtc)
        {
            string tmp = $"{memo}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
            try
            {
                Directory.CreateDirectory(Path.GetDirectoryName(memo)!);
                File.WriteAllText(tmp, stamp + hash);
                File.Move(tmp, memo, overwrite: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                if (File.Exists(tmp)) File.Delete(tmp);   // a read-only cache folder only costs the hashing next time
            }
        }
        return hash;
    }

    public static string PathFor(string cacheDir, string key) => Path.Combine(cacheDir, key + ".packed");

    /// <summary>Opens the cache for <paramref name="key"/>, or null when absent or unreadable (then written anew).</summary>
    public static PackedCache? TryOpen(string cacheDir, string key)
    {
        string p = PathFor(cacheDir, key);
        if (!File.Exists(p)) return null;
        try
        {
            return new PackedCache(p);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Writes <paramref name="rows"/> (e.g. <see cref="PlannedRows"/>, which builds each row as it is read: each row is
    /// read twice, and only one row's arrays plus a bit per token are held) under <paramref name="key"/>, atomically.
    /// </summary>
    public static PackedCache Write(string cacheDir, string key, IReadOnlyList<PackedRow> rows, PackStats stats)
    {
        Directory.CreateDirectory(cacheDir);
        string final = PathFor(cacheDir, key);
        string tmp = $"{final}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        // First pass: the small per-row arrays, the widest id, whether every label is its token's id or -100.
        int maxId = 0;
        bool labelsAsIds = true;
        long tokens = 0;
        var tokenStarts = new long[rows.Count + 1];
        var sampleStarts = new long[rows.Count + 1];
        var cus = new List<int[]>(rows.Count);
        var sampleIndices = new List<int[]>(rows.Count);
        for (int r = 0; r < rows.Count; r++)
        {
            var row = rows[r];
            foreach (int id in row.InputIds) maxId = Math.Max(maxId, id);
            for (int i = 0; i < row.Labels.Length && labelsAsIds; i++) labelsAsIds = row.Labels[i] == row.InputIds[i] || row.Labels[i] == -100;
            tokens += row.InputIds.Length;
            tokenStarts[r + 1] = tokens;
            sampleStarts[r + 1] = sampleStarts[r] + row.SampleIndices.Length;
            cus.Add(row.CumulativeLengths);
            sampleIndices.Add(row.SampleIndices);
        }
        int idBytes = maxId < 1 << 16 ? 2 : maxId < 1 << 24 ? 3 : 4;
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            using (var w = new BinaryWriter(fs))
            {
                w.Write(Magic); w.Write(Version); w.Write(rows.Count); w.Write((int)sampleStarts[^1]);
                w.Write(stats.DroppedNoLoss); w.Write(stats.Truncated); w.Write(stats.MaxLength); w.Write(idBytes | (labelsAsIds ? 1 : 0) << 8);
                w.Write(tokens);
                foreach (long t in tokenStarts) w.Write(t);
                foreach (long t in sampleStarts) w.Write(t);
                foreach (var cu in cus) WriteInts(w, cu);
                foreach (var si in sampleIndices) WriteInts(w, si);
                // Second pass: ids in idBytes, label bits gathered on the side.
                var bits = labelsAsIds ? new byte[(tokens + 7) / 8] : null;
                var buf = new byte[1 << 16];
                long t0 = 0;
                foreach (var row in rows)
                {
                    for (int i = 0; i < row.InputIds.Length;)
                    {
                        int n = Math.Min(row.InputIds.Length - i, buf.Length / idBytes);
                        for (int k = 0; k < n; k++)
                        {
                            uint id = (uint)row.InputIds[i + k];
                            for (int b = 0; b < idBytes; b++) buf[k * idBytes + b] = (byte)(id >> 8 * b);
                        }
                        w.Write(buf, 0, n * idBytes);
                        i += n;
                    }
                    if (bits is not null)
                        for (int i = 0; i < row.Labels.Length; i++)
                            if (row.Labels[i] != -100) bits[(t0 + i) >> 3] |= (byte)(1 << (int)((t0 + i) & 7));
                    t0 += row.InputIds.Length;
                }
                if (bits is not null) w.Write(bits);
                else foreach (var row in rows) WriteInts(w, row.Labels);
                w.Flush();
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, final, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
        return new PackedCache(final);
    }

    static void WriteInts(BinaryWriter w, int[] a) => w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(a.AsSpan()));

    public PackedRow GetRow(int i)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(i);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(i, RowCount);
        long t0 = _view.ReadInt64(_tokenStartAt + 8L * i), t1 = _view.ReadInt64(_tokenStartAt + 8L * (i + 1));
        long s0 = _view.ReadInt64(_sampleStartAt + 8L * i), s1 = _view.ReadInt64(_sampleStartAt + 8L * (i + 1));
        int n = (int)(t1 - t0), m = (int)(s1 - s0);
        var cu = Ints(_cuAt + 4 * (s0 + i), m + 1);
        var raw = new byte[n * _idBytes];
        _view.ReadArray(_idsAt + _idBytes * t0, raw, 0, raw.Length);
        var ids = new int[n];
        for (int k = 0; k < n; k++)
        {
            int id = 0;
            for (int b = 0; b < _idBytes; b++) id |= raw[k * _idBytes + b] << 8 * b;
            ids[k] = id;
        }
        int[] labels;
        if (_labelsAsIds)
        {
            long first = t0 >> 3;
            var bits = new byte[(int)(((t1 + 7) >> 3) - first)];
            _view.ReadArray(_labelsAt + first, bits, 0, bits.Length);
            labels = new int[n];
            for (int k = 0; k < n; k++)
            {
                long t = t0 + k;
                labels[k] = (bits[(int)((t >> 3) - first)] >> (int)(t & 7) & 1) != 0 ? ids[k] : -100;
            }
        }
        else labels = Ints(_labelsAt + 4 * t0, n);
        var pos = new int[n];
        for (int k = 0; k < m; k++)
            for (int j = cu[k]; j < cu[k + 1]; j++) pos[j] = j - cu[k];
        return new PackedRow(ids, labels, cu, pos, Ints(_sampleAt + 4 * s0, m));
    }

    int[] Ints(long offset, int count)
    {
        var a = new int[count];
        _view.ReadArray(offset, a, 0, count);
        return a;
    }

    public void Dispose()
    {
        _view.Dispose();
        _file.Dispose();
    }
}
