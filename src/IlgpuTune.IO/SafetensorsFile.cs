using System.Buffers;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>
/// One safetensors file (formats.md §1.1), memory-mapped read-only. The header is fully validated on open, so every tensor's
/// bytes lie inside the mapping; data is read through the mapping and never copied whole into managed memory.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>The reference reader's limit (safetensors MAX_HEADER_SIZE).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    // Elements converted per step, so tensors over 2 GiB of bytes can still be read into a float[]/int[].
    private const int ChunkElements = 1 << 20;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _data; // start of the data buffer (file offset 8 + N); null once disposed
    private readonly Dictionary<string, TensorInfo> _byName;

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensors ordered by data offset (ties, i.e. zero-size tensors, in header order).</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    private SafetensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* data,
        Dictionary<string, string> metadata, List<TensorInfo> tensors)
    {
        Path = path;
        _map = map;
        _view = view;
        _data = data;
        Metadata = metadata;
        Tensors = tensors.AsReadOnly();
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>Maps and validates <paramref name="path"/>; a malformed file throws InvalidDataException naming it.</summary>
    public static SafetensorsFile Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool pointerHeld = false;
        try
        {
            long length = fs.Length;
            if (length < 8)
                throw Bad(path, $"file is {length} bytes; expected at least 8 (the u64 header length)");
            // Read-only: a writable (copy-on-write) mapping would be charged to the commit limit, and Linux refuses one
            // larger than RAM + swap even under the default overcommit heuristic.
            map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None,
                leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePtr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            pointerHeld = true;
            basePtr += view.PointerOffset;

            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(basePtr, 8));
            if (n > MaxHeaderBytes)
                throw Bad(path, $"header length {n} exceeds the limit of {MaxHeaderBytes} bytes");
            if (8 + (long)n > length)
                throw Bad(path, $"header length {n} runs past the end of the {length}-byte file");
            var header = new ReadOnlySpan<byte>(basePtr + 8, (int)n);
            var (metadata, tensors) = ParseHeader(path, header);
            Validate(path, tensors, length - 8 - (long)n);
            return new SafetensorsFile(path, map, view, basePtr + 8 + (long)n, metadata, tensors);
        }
        catch
        {
            if (pointerHeld) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            fs.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorInfo Get(string name) => _byName.TryGetValue(name, out var t)
        ? t
        : throw new KeyNotFoundException($"tensor '{name}' not found in {Path}");

    /// <summary>Zero-copy view of the tensor's bytes; valid until Dispose. Tensors over 2 GiB: use the ranged overload.</summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        var t = Get(name);
        if (t.ByteLength > int.MaxValue)
            throw new NotSupportedException(
                $"tensor '{name}' in {Path} is {t.ByteLength} bytes, over what one span holds; "
                + "use GetBytes(name, offset, length)");
        return Span(t.Begin, (int)t.ByteLength);
    }

    /// <summary>Zero-copy view of bytes [offset, offset+length) of the tensor's data.</summary>
    public ReadOnlySpan<byte> GetBytes(string name, long offset, int length)
    {
        var t = Get(name);
        if (offset < 0 || length < 0 || offset > t.ByteLength - length)
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"range [{offset}, {offset}+{length}) is outside tensor '{name}' ({t.ByteLength} bytes) in {Path}");
        return Span(t.Begin + offset, length);
    }

    /// <summary>
    /// The tensor's bytes as memory viewing the mapping, without a copy: the pages are read from the file when first touched
    /// and stay reclaimable page cache. The view holds the mapping open until it is disposed, also past this file's
    /// Dispose. The mapping is read-only: the memory is for frozen weights and must never be written (a write faults).
    /// Tensors over 2 GiB: null (a span cannot hold them).
    /// </summary>
    public MemoryManager<byte>? ShareBytes(string name)
    {
        var t = Get(name);
        ObjectDisposedException.ThrowIf(_data == null, this);
        return t.ByteLength > int.MaxValue ? null : new MappedBytes(_view.SafeMemoryMappedViewHandle, _data + t.Begin, (int)t.ByteLength);
    }

    // One reference to the mapped view (SafeHandle counts them: the unmapping waits for the last one).
    private sealed class MappedBytes : MemoryManager<byte>
    {
        private readonly SafeHandle _handle;
        private readonly byte* _pointer;
        private readonly int _length;
        private int _released;

        public MappedBytes(SafeHandle handle, byte* pointer, int length)
        {
            bool added = false;
            handle.DangerousAddRef(ref added);
            _handle = handle;
            _pointer = pointer;
            _length = length;
        }

        public override Span<byte> GetSpan()
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _released) != 0, this);
            return new Span<byte>(_pointer, _length);
        }

        public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) _handle.DangerousRelease();
        }
    }

    /// <summary>A copy of the tensor's bytes (any dtype).</summary>
    public byte[] ReadBytes(string name)
    {
        var t = Get(name);
        if (t.ByteLength > Array.MaxLength)
            throw new NotSupportedException($"tensor '{name}' in {Path} is {t.ByteLength} bytes, more than an array holds");
        var result = GC.AllocateUninitializedArray<byte>((int)t.ByteLength); // every byte is copied below
        for (long i = 0; i < result.Length; i += ChunkElements)
        {
            int count = (int)Math.Min(ChunkElements, result.Length - i);
            Span(t.Begin + i, count).CopyTo(result.AsSpan((int)i, count));
        }
        return result;
    }

    public float[] ReadFloat32(string name)
    {
        var result = new float[CheckedCount(Get(name))];
        ReadFloat32(name, result);
        return result;
    }

    /// <summary>Converts any float, int or bool dtype (not C64 or the sub-byte F4/F6 types) to float.</summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var t = Get(name);
        if (!ElementConvert.CanReadAsFloat(t.DType))
            throw new NotSupportedException($"tensor '{name}' in {Path} has dtype {t.DType}, which cannot be read as float");
        CheckDestination(t, destination.Length);
        int size = SafetensorsDTypes.Bits(t.DType)!.Value / 8;
        for (int i = 0; i < destination.Length; i += ChunkElements)
        {
            int count = Math.Min(ChunkElements, destination.Length - i);
            ElementConvert.ToFloat(t.DType, Span(t.Begin + (long)i * size, count * size), destination.Slice(i, count));
        }
    }

    /// <summary>Reads BOOL/U8/I8/I16/U16/I32 exactly and U32/I64/U64 range-checked (OverflowException) as int.</summary>
    public int[] ReadInt32(string name)
    {
        var t = Get(name);
        if (!ElementConvert.CanReadAsInt32(t.DType))
            throw new NotSupportedException($"tensor '{name}' in {Path} has dtype {t.DType}, which cannot be read as int32");
        var result = new int[CheckedCount(t)];
        int size = SafetensorsDTypes.Bits(t.DType)!.Value / 8;
        for (int i = 0; i < result.Length; i += ChunkElements)
        {
            int count = Math.Min(ChunkElements, result.Length - i);
            int bad = ElementConvert.ToInt32(t.DType, Span(t.Begin + (long)i * size, count * size),
                result.AsSpan(i, count), out var value);
            if (bad >= 0)
                throw new OverflowException(
                    $"tensor '{name}' in {Path}: element {i + bad} = {value} ({t.DType}) does not fit in int32");
        }
        return result;
    }

    public void Dispose()
    {
        if (_data == null) return;
        _data = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    private ReadOnlySpan<byte> Span(long offsetInData, int length)
    {
        ObjectDisposedException.ThrowIf(_data == null, this);
        return new ReadOnlySpan<byte>(_data + offsetInData, length);
    }

    private int CheckedCount(TensorInfo t) => t.ElementCount <= Array.MaxLength
        ? (int)t.ElementCount
        : throw new NotSupportedException($"tensor '{t.Name}' in {Path} has {t.ElementCount} elements, more than an array holds");

    private void CheckDestination(TensorInfo t, int length)
    {
        if (length != t.ElementCount)
            throw new ArgumentException(
                $"destination has {length} elements; tensor '{t.Name}' in {Path} has {t.ElementCount}", "destination");
    }

    // ---- header parsing and validation (formats.md §1.1, mirrors safetensors Metadata::validate / read_metadata) ----

    private static (Dictionary<string, string>, List<TensorInfo>) ParseHeader(string path, ReadOnlySpan<byte> header)
    {
        if (header.Length == 0 || header[0] != (byte)'{')
            throw Bad(path, header.Length == 0
                ? "header is empty; expected a JSON object starting with '{'"
                : $"header starts with byte 0x{header[0]:X2}; expected a JSON object starting with '{{' (0x7B)");
        if (!Utf8.IsValid(header))
            throw Bad(path, "header is not valid UTF-8");

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var tensors = new List<TensorInfo>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var reader = new Utf8JsonReader(header);
        try
        {
            reader.Read(); // '{'
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                string key = reader.GetString()!;
                if (!seen.Add(key)) throw Bad(path, key, "duplicate key in the header");
                reader.Read();
                if (key == "__metadata__") ParseMetadata(path, ref reader, metadata);
                else tensors.Add(ParseEntry(path, key, ref reader));
            }
            // Only whitespace (the writer's space padding) may follow; anything else makes the reader throw here.
            reader.Read();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: header is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)   // GetString of an escape that is not UTF-16 text (a lone surrogate)
        {
            throw new InvalidDataException($"{path}: header holds a string that is not valid UTF-16 text: {e.Message}", e);
        }
        return (metadata, tensors);
    }

    private static void ParseMetadata(string path, ref Utf8JsonReader reader, Dictionary<string, string> metadata)
    {
        if (reader.TokenType == JsonTokenType.Null) return;
        if (reader.TokenType != JsonTokenType.StartObject)
            throw Bad(path, $"__metadata__ must be an object of string values, found {reader.TokenType}");
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            string key = reader.GetString()!;
            reader.Read();
            if (reader.TokenType != JsonTokenType.String)
                throw Bad(path, $"__metadata__ value of '{key}' must be a string, found {reader.TokenType}");
            if (!metadata.TryAdd(key, reader.GetString()!))
                throw Bad(path, $"__metadata__ has duplicate key '{key}'");
        }
    }

    private static TensorInfo ParseEntry(string path, string key, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
            throw Bad(path, key, $"expected an object with dtype, shape and data_offsets, found {reader.TokenType}");
        string? dtype = null;
        long[]? shape = null, offsets = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            string field = reader.GetString()!;
            reader.Read();
            switch (field)
            {
                case "dtype":
                    if (dtype != null) throw Bad(path, key, "duplicate field 'dtype'");
                    if (reader.TokenType != JsonTokenType.String)
                        throw Bad(path, key, $"'dtype' must be a string, found {reader.TokenType}");
                    dtype = reader.GetString()!;
                    if (SafetensorsDTypes.Bits(dtype) == null)
                        throw Bad(path, key,
                            $"unknown dtype '{dtype}'; expected one of {string.Join(", ", SafetensorsDTypes.Names)}");
                    break;
                case "shape":
                    if (shape != null) throw Bad(path, key, "duplicate field 'shape'");
                    shape = ReadNaturals(path, key, "shape", ref reader);
                    break;
                case "data_offsets":
                    if (offsets != null) throw Bad(path, key, "duplicate field 'data_offsets'");
                    offsets = ReadNaturals(path, key, "data_offsets", ref reader);
                    if (offsets.Length != 2)
                        throw Bad(path, key, $"'data_offsets' must be [begin, end], found {offsets.Length} numbers");
                    if (offsets[1] < offsets[0])
                        throw Bad(path, key, $"data_offsets [{offsets[0]}, {offsets[1]}]: end is before begin");
                    break;
                default:
                    reader.Skip(); // unknown fields are ignored, as by the reference (serde) reader
                    break;
            }
        }
        if (dtype == null) throw Bad(path, key, "missing 'dtype'");
        if (shape == null) throw Bad(path, key, "missing 'shape'");
        if (offsets == null) throw Bad(path, key, "missing 'data_offsets'");
        return new TensorInfo(key, dtype, shape, offsets[0], offsets[1]);
    }

    // An array of non-negative integers that fit in a long.
    private static long[] ReadNaturals(string path, string key, string field, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            throw Bad(path, key, $"'{field}' must be an array of non-negative integers, found {reader.TokenType}");
        var values = new List<long>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v) || v < 0)
            {
                string found = reader.TokenType == JsonTokenType.Number
                    ? Encoding.UTF8.GetString(reader.ValueSpan)
                    : reader.TokenType.ToString();
                throw Bad(path, key, $"'{field}' must contain non-negative integers, found {found}");
            }
            values.Add(v);
        }
        return values.ToArray();
    }

    private static void Validate(string path, List<TensorInfo> tensors, long dataLength)
    {
        // Stable sort by (begin, end): zero-size tensors sharing an offset keep header order.
        var order = tensors.Select((t, i) => (t, i)).OrderBy(p => p.t.Begin).ThenBy(p => p.t.End).ThenBy(p => p.i);
        var sorted = order.Select(p => p.t).ToList();
        long expected = 0;
        foreach (var t in sorted)
        {
            if (t.Begin != expected)
                throw Bad(path, t.Name, $"data_offsets begin at {t.Begin}; expected {expected} (tensor data must be "
                    + "contiguous from 0 with no gaps or overlaps)");
            long bytes;
            try
            {
                bytes = checked(t.ElementCount * SafetensorsDTypes.Bits(t.DType)!.Value);
            }
            catch (OverflowException)
            {
                throw Bad(path, t.Name, $"shape [{string.Join(", ", t.Shape)}] overflows when computing its byte size");
            }
            if (bytes % 8 != 0)
                throw Bad(path, t.Name, $"{t.ElementCount} elements of {t.DType} are not a whole number of bytes");
            if (t.ByteLength != bytes / 8)
                throw Bad(path, t.Name, $"data_offsets [{t.Begin}, {t.End}] span {t.ByteLength} bytes; shape "
                    + $"[{string.Join(", ", t.Shape)}] of {t.DType} needs {bytes / 8}");
            expected = t.End;
        }
        if (expected != dataLength)
            throw Bad(path, $"tensor data ends at {expected} but the data buffer is {dataLength} bytes "
                + $"(8 + header + data must equal the file length)");
        tensors.Clear();
        tensors.AddRange(sorted);
    }

    private static InvalidDataException Bad(string path, string what) => new($"{path}: {what}");

    private static InvalidDataException Bad(string path, string key, string what) => new($"{path}: tensor '{key}': {what}");
}
