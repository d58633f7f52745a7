using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;

namespace IlgpuTune.Data.Packing;

/// <summary>
/// The tokenized, packed dataset on disk, memory-mapped. Layout (little endian): "ITPK", version, rows, samples,
/// droppedNoLoss, truncated, maxLength, tokens (i64), then i64 tokenStart[rows+1], i64 sampleStart[rows+1], and the i32
/// arrays ids[tokens], labels[tokens], positions[tokens], cumulative[rows+samples], sampleIndex[samples].
/// Written to a temporary file and renamed, so a crash never leaves a half-written cache under the key.
/// </summary>
public sealed class PackedCache : IDisposable
{
    const int Magic = 0x4B505449;   // "ITPK"
    const int Version = 1;
    const int HeaderBytes = 8 * 4 + 8;

    readonly MemoryMappedFile _file;
    readonly MemoryMappedViewAccessor _view;
    readonly long _tokens, _idsAt, _labelsAt, _posAt, _cuAt, _sampleAt, _tokenStartAt, _sampleStartAt;

    public PackStats Stats { get; }
    public int RowCount => Stats.Rows;

    PackedCache(string path)
    {
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        if (_view.ReadInt32(0) != Magic || _view.ReadInt32(4) != Version) throw new InvalidDataException($"{path} is not a packed dataset cache v{Version}");
        int rows = _view.ReadInt32(8), samples = _view.ReadInt32(12);
        Stats = new PackStats(rows, samples, _view.ReadInt32(16), _view.ReadInt32(20), _view.ReadInt64(32), _view.ReadInt32(24));
        _tokens = Stats.Tokens;
        _tokenStartAt = HeaderBytes;
        _sampleStartAt = _tokenStartAt + 8L * (rows + 1);
        _idsAt = _sampleStartAt + 8L * (rows + 1);
        _labelsAt = _idsAt + 4 * _tokens;
        _posAt = _labelsAt + 4 * _tokens;
        _cuAt = _posAt + 4 * _tokens;
        _sampleAt = _cuAt + 4L * (rows + samples);
    }

    /// <summary>Cache key: SHA-256 over the data files' contents, tokenizer files, template, format and packing options.</summary>
    /// <param name="pack">false = one sample per row (the key differs from the packed dataset's).</param>
    public static string Key(IEnumerable<string> dataFiles, IEnumerable<string> tokenizerFiles, string template, string format,
        int maxLength, bool shuffleBeforePack, ulong seed, bool pack = true)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string s) => h.AppendData(Encoding.UTF8.GetBytes(s + "\n"));
        Add($"ilgpu-tune packed v{Version}|{template}|{format}|{maxLength}|{shuffleBeforePack}|{seed}" + (pack ? "" : "|unpacked"));
        foreach (var f in dataFiles.Concat(["--"]).Concat(tokenizerFiles))
        {
            if (f == "--") { Add(f); continue; }
            using var s = File.OpenRead(f);
            Add(Path.GetFileName(f) + ":" + Convert.ToHexString(SHA256.HashData(s)));
        }
        return Convert.ToHexString(h.GetHashAndReset()).ToLowerInvariant();
    }

    public static string PathFor(string cacheDir, string key) => Path.Combine(cacheDir, key + ".packed");

    /// <summary>Opens the cache for <paramref name="key"/>, or null when absent.</summary>
    public static PackedCache? TryOpen(string cacheDir, string key)
    {
        string p = PathFor(cacheDir, key);
        return File.Exists(p) ? new PackedCache(p) : null;
    }

    public static PackedCache Write(string cacheDir, string key, IReadOnlyList<PackedRow> rows, PackStats stats)
    {
        Directory.CreateDirectory(cacheDir);
        string final = PathFor(cacheDir, key);
        string tmp = $"{final}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            using (var w = new BinaryWriter(fs))
            {
                int samples = rows.Sum(r => r.SampleIndices.Length);
                w.Write(Magic); w.Write(Version); w.Write(rows.Count); w.Write(samples);
                w.Write(stats.DroppedNoLoss); w.Write(stats.Truncated); w.Write(stats.MaxLength); w.Write(0);
                w.Write(rows.Sum(r => (long)r.InputIds.Length));
                long at = 0;
                w.Write(0L);
                foreach (var r in rows) w.Write(at += r.InputIds.Length);
                at = 0;
                w.Write(0L);
                foreach (var r in rows) w.Write(at += r.SampleIndices.Length);
                foreach (var r in rows) WriteInts(w, r.InputIds);
                foreach (var r in rows) WriteInts(w, r.Labels);
                foreach (var r in rows) WriteInts(w, r.PositionIds);
                foreach (var r in rows) WriteInts(w, r.CumulativeLengths);
                foreach (var r in rows) WriteInts(w, r.SampleIndices);
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
        return new PackedRow(Ints(_idsAt + 4 * t0, n), Ints(_labelsAt + 4 * t0, n),
            Ints(_cuAt + 4 * (s0 + i), m + 1), Ints(_posAt + 4 * t0, n), Ints(_sampleAt + 4 * s0, m));
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
