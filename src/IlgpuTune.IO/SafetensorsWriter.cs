using System.Buffers;
using System.Globalization;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>
/// A tensor to save: <paramref name="Data"/> holds prod(Shape) little-endian elements of <paramref name="DType"/>, row-major.
/// </summary>
public sealed record TensorToWrite(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data);

/// <summary>How <see cref="SafetensorsWriter.WriteShardedParallel"/> runs ahead of the writer: at most
/// <paramref name="Parallelism"/> tensors produced at once, their <paramref name="Cost"/> (memory held while produced and
/// not yet written; default the tensor's bytes) within <paramref name="BudgetBytes"/>. <paramref name="Written"/> is told when
/// a tensor's bytes have been written and are no longer used (to reuse its buffers).</summary>
public sealed record WritePipeline(long BudgetBytes, int Parallelism, Func<TensorSpec, long>? Cost = null,
    Action<TensorSpec>? Written = null);

/// <summary>A tensor declared ahead of its data, for streaming writes: the data is asked for when its turn comes.</summary>
public sealed record TensorSpec(string Name, DType DType, long[] Shape)
{
    /// <summary>prod(Shape) · element size.</summary>
    public long ByteLength => checked(Shape.Aggregate(1L, (n, d) => n * d) * DType.Size());
}

/// <summary>
/// Writes safetensors files byte-identical to the Rust writer given the same metadata (formats.md §1.1, §1.3), and sharded
/// checkpoints with an index like huggingface_hub / transformers (§1.4). Every file is written atomically.
/// </summary>
public static class SafetensorsWriter
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Writes one file. <c>__metadata__</c> holds "format":"pt" (transformers refuses files without a known format; a caller
    /// "format" entry replaces it) followed by the caller's entries in code-point order.
    /// </summary>
    public static void Write(string path, IEnumerable<TensorToWrite> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        Validate(list);
        var data = list.ToDictionary(t => t.Name, t => t.Data, StringComparer.Ordinal);
        byte[] header = Header(Specs(list), metadata, out var ordered);
        WriteValidated(path, header, ordered, t => data[t.Name]);
    }

    /// <summary>Zero-copy view of <paramref name="data"/>; an empty <paramref name="shape"/> is a scalar.</summary>
    public static TensorToWrite F32(string name, float[] data, params long[] shape) =>
        new(name, DType.F32, shape, new ByteView<float>(data).Memory);

    /// <summary>float32 data as little-endian bytes of <paramref name="dtype"/> (F32: a zero-copy view; F16/BF16: rounded to
    /// nearest even into a new buffer).</summary>
    public static ReadOnlyMemory<byte> Encode(float[] data, DType dtype)
    {
        if (dtype == DType.F32) return new ByteView<float>(data).Memory;
        var bytes = new byte[data.LongLength * 2];
        Encode(data, dtype, bytes);
        return bytes;
    }

    /// <summary>
    /// <paramref name="data"/> as F16 or BF16 bytes (rounded to nearest even; a NaN stays a quiet NaN) into
    /// <paramref name="destination"/> (2 bytes per value), in element-wise chunks on all cores: the same bytes whatever the
    /// split.
    /// </summary>
    public static void Encode(float[] data, DType dtype, byte[] destination)
    {
        if (dtype is not (DType.F16 or DType.BF16)) throw new ArgumentException($"float data encodes into F16 or BF16 bytes, not {dtype}", nameof(dtype));
        if (destination.LongLength != data.LongLength * 2)
            throw new ArgumentException($"{destination.LongLength} bytes for {data.LongLength} values", nameof(destination));
        const int chunk = 1 << 18;
        Parallel.For(0, (data.Length + chunk - 1) / chunk, c =>
        {
            var from = data.AsSpan(c * chunk, Math.Min(chunk, data.Length - c * chunk));
            var to = MemoryMarshal.Cast<byte, ushort>(destination.AsSpan()).Slice(c * chunk, from.Length);
            if (dtype == DType.F16) TensorPrimitives.ConvertToHalf(from, MemoryMarshal.Cast<ushort, Half>(to));
            else ToBf16(from, to);
        });
    }

    // HalfBits.FloatToBf16 on vectors: u + 0x7FFF + ((u >> 16) & 1), top half; NaN: (u >> 16) | 0x40.
    private static void ToBf16(ReadOnlySpan<float> from, Span<ushort> to)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var bits = MemoryMarshal.Cast<float, uint>(from);
            for (; i + Vector256<uint>.Count <= from.Length; i += Vector256<uint>.Count)
            {
                var u = Vector256.Create(bits.Slice(i, Vector256<uint>.Count));
                var rounded = (u + Vector256.Create(0x7FFFu) + ((u >> 16) & Vector256<uint>.One)) >> 16;
                var f = u.AsSingle();
                var nan = ~Vector256.Equals(f, f).AsUInt32();
                var r = Vector256.ConditionalSelect(nan, (u >> 16) | Vector256.Create(0x40u), rounded);
                Vector128.Narrow(r.GetLower(), r.GetUpper()).CopyTo(to.Slice(i, Vector256<uint>.Count));
            }
        }
        for (; i < from.Length; i++) to[i] = HalfBits.FloatToBf16(from[i]);
    }

    /// <summary>Zero-copy view of <paramref name="data"/>; an empty <paramref name="shape"/> is a scalar.</summary>
    public static TensorToWrite I32(string name, int[] data, params long[] shape) =>
        new(name, DType.I32, shape, new ByteView<int>(data).Memory);

    /// <summary>
    /// Splits <paramref name="tensors"/> greedily in the given order (a tensor over the limit gets its own shard; a tensor that
    /// would push the current shard over the limit starts a new one) and writes "&lt;prefix&gt;.safetensors" for one shard,
    /// else "&lt;prefix&gt;-00001-of-0000N.safetensors"... plus "&lt;prefix&gt;.safetensors.index.json". Files of an earlier
    /// save with the same prefix that this layout does not use are deleted afterwards, as transformers does, so a reader never
    /// mixes two saves. Returns the names written (shards, then the index), relative to <paramref name="directory"/>.
    /// </summary>
    public static IReadOnlyList<string> WriteSharded(string directory, string prefix, IReadOnlyList<TensorToWrite> tensors,
        long maxShardBytes, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Validate(tensors);
        var data = tensors.ToDictionary(t => t.Name, t => t.Data, StringComparer.Ordinal);
        return WriteShardedCore(directory, prefix, Specs(tensors), maxShardBytes, t => data[t.Name], metadata);
    }

    /// <summary>
    /// <see cref="WriteSharded"/> without holding the tensors: the layout (shards, headers, index) is planned from
    /// <paramref name="tensors"/> alone, then <paramref name="data"/> is called once per tensor, shard by shard in header
    /// order, and its bytes are written before the next call — so only one tensor's data need exist at a time.
    /// <paramref name="data"/> must return exactly <see cref="TensorSpec.ByteLength"/> bytes.
    /// </summary>
    public static IReadOnlyList<string> WriteShardedStreaming(string directory, string prefix, IReadOnlyList<TensorSpec> tensors,
        long maxShardBytes, Func<TensorSpec, ReadOnlyMemory<byte>> data, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Validate(tensors);
        return WriteShardedCore(directory, prefix, tensors, maxShardBytes, data, metadata);
    }

    /// <summary>
    /// <see cref="WriteShardedStreaming"/> with the data produced ahead of the writer, in parallel (same files, byte for byte):
    /// <paramref name="data"/> is called from up to <see cref="WritePipeline.Parallelism"/> threads at once, in write order,
    /// while earlier tensors are written; the costs (<see cref="WritePipeline.Cost"/>, default the tensor's bytes) of the
    /// tensors produced but not yet written stay within <see cref="WritePipeline.BudgetBytes"/> (one tensor over the budget
    /// runs alone).
    /// </summary>
    public static IReadOnlyList<string> WriteShardedParallel(string directory, string prefix, IReadOnlyList<TensorSpec> tensors,
        long maxShardBytes, Func<TensorSpec, ReadOnlyMemory<byte>> data, WritePipeline pipeline,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        Validate(tensors);
        return WriteShardedCore(directory, prefix, tensors, maxShardBytes, data, metadata, pipeline);
    }

    private static IReadOnlyList<string> WriteShardedCore(string directory, string prefix, IReadOnlyList<TensorSpec> tensors,
        long maxShardBytes, Func<TensorSpec, ReadOnlyMemory<byte>> data, IReadOnlyDictionary<string, string>? metadata,
        WritePipeline? pipeline = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        if (prefix.Length == 0 || System.IO.Path.GetFileName(prefix) != prefix)
            throw new ArgumentException($"prefix '{prefix}' must be a plain file name", nameof(prefix));
        Directory.CreateDirectory(directory);
        var shards = Split(tensors, t => t.ByteLength, maxShardBytes);
        if (shards.Count == 0) shards.Add([]);
        // The whole layout first (file names, headers, write order), so that a pipeline can run ahead across shard ends.
        var plan = shards.Select((shard, i) => (
            File: shards.Count == 1 ? prefix + ".safetensors" : $"{prefix}-{i + 1:D5}-of-{shards.Count:D5}.safetensors",
            Header: Header(shard, metadata, out var ordered), Ordered: ordered)).ToList();
        OrderedPipeline<TensorSpec>? ahead = pipeline is null ? null : new OrderedPipeline<TensorSpec>(
            plan.SelectMany(p => p.Ordered).ToList(), data, pipeline.Cost ?? (t => t.ByteLength), pipeline.BudgetBytes, pipeline.Parallelism,
            pipeline.Written);
        try
        {
            int taken = 0;
            Func<TensorSpec, ReadOnlyMemory<byte>> next = ahead is null ? data : _ => ahead.Take(taken++);
            foreach (var p in plan) WriteValidated(System.IO.Path.Combine(directory, p.File), p.Header, p.Ordered, next);
        }
        finally
        {
            ahead?.Dispose();
        }
        string indexName = prefix + ".safetensors.index.json";
        var written = plan.Select(p => p.File).ToList();
        if (plan.Count > 1)
        {
            var weightMap = plan.SelectMany(p => p.Ordered.Select(t => (t.Name, p.File))).ToList();
            long totalSize = tensors.Sum(t => t.ByteLength);
            AtomicFile.Write(System.IO.Path.Combine(directory, indexName), s => s.Write(IndexJson(totalSize, weightMap)));
            written.Add(indexName);
        }
        RemoveStale(directory, prefix, written);
        return written;
    }

    /// <summary>
    /// "2GB", "500MB", "10KB", "1.5GB", "4096" (bytes), units case-insensitive: B, KB/MB/GB/TB = 10^3..10^12,
    /// KiB/MiB/GiB/TiB = 2^10..2^40 (huggingface_hub uses the decimal units). Fractions are truncated to whole bytes.
    /// </summary>
    public static long ParseSize(string s)
    {
        (string Unit, long Multiplier)[] units =
        [
            ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40),
            ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1),
        ];
        string t = s.Trim();
        long multiplier = 1;
        foreach (var (unit, m) in units)
        {
            if (t.EndsWith(unit, StringComparison.OrdinalIgnoreCase))
            {
                t = t[..^unit.Length].TrimEnd();
                multiplier = m;
                break;
            }
        }
        if (!decimal.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value))
            throw new FormatException($"cannot parse size '{s}'; expected a number with an optional unit, e.g. 5GB or 500MiB");
        decimal bytes = decimal.Truncate(value * multiplier);
        return bytes <= long.MaxValue ? (long)bytes : throw new OverflowException($"size '{s}' is over {long.MaxValue} bytes");
    }

    // ---- internals ----

    // huggingface_hub split_state_dict_into_shards_factory (formats.md §1.4); an oversized tensor's shard is appended at once,
    // before the shard being filled.
    internal static List<List<TensorToWrite>> Split(IReadOnlyList<TensorToWrite> tensors, long maxShardBytes) =>
        Split(tensors, t => t.Data.Length, maxShardBytes);

    private static List<List<T>> Split<T>(IReadOnlyList<T> tensors, Func<T, long> sizeOf, long maxShardBytes)
    {
        var shards = new List<List<T>>();
        var current = new List<T>();
        long currentSize = 0;
        foreach (var t in tensors)
        {
            long size = sizeOf(t);
            if (size > maxShardBytes)
            {
                shards.Add([t]);
                continue;
            }
            if (currentSize + size > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentSize = 0;
            }
            current.Add(t);
            currentSize += size;
        }
        if (current.Count > 0) shards.Add(current);
        return shards;
    }

    private static List<TensorSpec> Specs(IReadOnlyList<TensorToWrite> tensors) =>
        tensors.Select(t => new TensorSpec(t.Name, t.DType, t.Shape)).ToList();

    private static void Validate(IReadOnlyList<TensorToWrite> tensors)
    {
        foreach (var t in tensors) ArgumentNullException.ThrowIfNull(t);
        Validate(Specs(tensors));
        foreach (var t in tensors)
        {
            long expected = t.Shape.Aggregate(1L, (n, d) => n * d) * t.DType.Size();
            if (t.Data.Length != expected)
                throw new ArgumentException($"tensor '{t.Name}': {t.Data.Length} bytes of data; shape "
                    + $"[{string.Join(", ", t.Shape)}] of {t.DType} needs {expected}", nameof(tensors));
        }
    }

    private static void Validate(IReadOnlyList<TensorSpec> tensors)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            ArgumentNullException.ThrowIfNull(t);
            if (t.Name is null || t.Name == "__metadata__")
                throw new ArgumentException($"invalid tensor name '{t.Name}'", nameof(tensors));
            if (!names.Add(t.Name))
                throw new ArgumentException($"duplicate tensor name '{t.Name}'", nameof(tensors));
            if (t.Shape is null || t.Shape.Any(d => d < 0))
                throw new ArgumentException(
                    $"tensor '{t.Name}': shape [{string.Join(", ", t.Shape ?? [])}] must have non-negative dimensions",
                    nameof(tensors));
            try
            {
                _ = t.ByteLength;
            }
            catch (OverflowException)
            {
                throw new ArgumentException($"tensor '{t.Name}': shape [{string.Join(", ", t.Shape)}] overflows",
                    nameof(tensors));
            }
            try
            {
                StrictUtf8.GetByteCount(t.Name);
            }
            catch (EncoderFallbackException e)
            {
                throw new ArgumentException($"tensor name '{t.Name}' is not valid UTF-16", nameof(tensors), e);
            }
        }
    }

    // Compact JSON exactly as serde_json writes it, tensors ordered like the Rust writer (dtype enum order descending, then
    // name), padded with spaces to a multiple of 8.
    private static byte[] Header(IReadOnlyList<TensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata,
        out List<TensorSpec> ordered)
    {
        ordered = tensors.Order(Comparer<TensorSpec>.Create((a, b) =>
        {
            int c = SafetensorsDTypes.Rank(b.DType.SafetensorsName())
                .CompareTo(SafetensorsDTypes.Rank(a.DType.SafetensorsName()));
            return c != 0 ? c : CompareCodePoints(a.Name, b.Name);
        })).ToList();

        var meta = new List<KeyValuePair<string, string>> { new("format", "pt") };
        if (metadata != null)
        {
            foreach (var (k, v) in metadata.OrderBy(e => e.Key, Comparer<string>.Create(CompareCodePoints)))
            {
                if (k is null || v is null)
                    throw new ArgumentException("metadata keys and values must not be null", nameof(metadata));
                if (k == "format") meta[0] = new(k, v);
                else meta.Add(new(k, v));
            }
        }

        var sb = new StringBuilder("{\"__metadata__\":{");
        for (int i = 0; i < meta.Count; i++)
        {
            if (i > 0) sb.Append(',');
            AppendString(sb, meta[i].Key).Append(':');
            AppendString(sb, meta[i].Value);
        }
        sb.Append('}');
        long offset = 0;
        foreach (var t in ordered)
        {
            sb.Append(',');
            AppendString(sb, t.Name).Append(":{\"dtype\":\"").Append(t.DType.SafetensorsName()).Append("\",\"shape\":[")
                .AppendJoin(',', t.Shape).Append("],\"data_offsets\":[").Append(offset).Append(',')
                .Append(offset + t.ByteLength).Append("]}");
            offset += t.ByteLength;
        }
        sb.Append('}');
        int length = StrictUtf8.GetByteCount(sb.ToString());
        sb.Append(' ', (8 - length % 8) % 8);
        var header = StrictUtf8.GetBytes(sb.ToString());
        if (header.Length > SafetensorsFile.MaxHeaderBytes)
            throw new InvalidOperationException(
                $"header is {header.Length} bytes, over the {SafetensorsFile.MaxHeaderBytes}-byte limit");
        return header;
    }

    // serde_json string escaping: quote, backslash, \b \f \n \r \t, other controls as \u00xx; everything else verbatim.
    private static StringBuilder AppendString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case < ' ': sb.Append("\\u00").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture)); break;
                default: sb.Append(c); break;
            }
        }
        return sb.Append('"');
    }

    private static void WriteValidated(string path, byte[] header, List<TensorSpec> ordered,
        Func<TensorSpec, ReadOnlyMemory<byte>> data) => AtomicFile.Write(path, s =>
    {
        Span<byte> n = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(n, (ulong)header.Length);
        s.Write(n);
        s.Write(header);
        foreach (var t in ordered)
        {
            var bytes = data(t);
            if (bytes.Length != t.ByteLength)
                throw new InvalidOperationException($"tensor '{t.Name}': {bytes.Length} bytes of data; shape "
                    + $"[{string.Join(", ", t.Shape)}] of {t.DType} needs {t.ByteLength}");
            s.Write(bytes.Span);
        }
    });

    // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n".
    private static byte[] IndexJson(long totalSize, List<(string Name, string File)> weightMap)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions
               {
                   Indented = true, NewLine = "\n", Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
               }))
        {
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteNumber("total_size", totalSize);
            w.WriteEndObject();
            w.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap.OrderBy(e => e.Name, Comparer<string>.Create(CompareCodePoints)))
                w.WriteString(name, file);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return [.. buffer.WrittenSpan, (byte)'\n'];
    }

    private static void RemoveStale(string directory, string prefix, List<string> written)
    {
        var shardName = new Regex($"^{Regex.Escape(prefix)}-[0-9]{{5}}-of-[0-9]{{5}}\\.safetensors$");
        foreach (var path in Directory.GetFiles(directory))
        {
            string name = System.IO.Path.GetFileName(path);
            bool ours = shardName.IsMatch(name) || name == prefix + ".safetensors" || name == prefix + ".safetensors.index.json";
            if (ours && !written.Contains(name)) File.Delete(path);
        }
    }

    // UTF-8 byte order, as Rust's String::cmp and Python's sorted() (UTF-16 ordinal order differs for surrogate pairs).
    private static int CompareCodePoints(string? a, string? b)
    {
        if (a is null || b is null) return string.CompareOrdinal(a, b);
        var ea = a.EnumerateRunes();
        var eb = b.EnumerateRunes();
        while (true)
        {
            bool ha = ea.MoveNext(), hb = eb.MoveNext();
            if (!ha || !hb) return ha.CompareTo(hb);
            int c = ea.Current.Value.CompareTo(eb.Current.Value);
            if (c != 0) return c;
        }
    }

    // Exposes a T[] as ReadOnlyMemory<byte> without copying (MemoryMarshal cannot reinterpret a Memory<T>).
    private sealed class ByteView<T>(T[] array) : MemoryManager<byte> where T : unmanaged
    {
        public override Span<byte> GetSpan() => MemoryMarshal.AsBytes(array.AsSpan());

        public override unsafe MemoryHandle Pin(int elementIndex = 0)
        {
            var handle = GCHandle.Alloc(array, GCHandleType.Pinned);
            return new MemoryHandle((byte*)handle.AddrOfPinnedObject() + elementIndex, handle);
        }

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }
}
