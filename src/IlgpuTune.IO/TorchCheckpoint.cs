// PyTorch torch.save checkpoints (pytorch_model.bin), formats.md §2: the zip format (torch >= 1.6) and the legacy
// sequential-pickle format, single files or shards listed by pytorch_model.bin.index.json. Files are memory-mapped; the
// pickle is read with the safe TorchPickle on open, and tensor bytes are gathered (by strides) and converted on each read.
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Numerics;
using System.Text;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>The tensors of a torch.save state dict: one file, or the shards of an index (same JSON as safetensors').</summary>
public sealed class TorchCheckpoint : IWeightSource
{
    public const string FileName = "pytorch_model.bin";
    public const string IndexName = "pytorch_model.bin.index.json";

    private readonly List<TorchFile> _files;
    private readonly Dictionary<string, TorchFile> _fileOf;
    private readonly List<string> _names;

    public string Path { get; }
    public IReadOnlyCollection<string> Names => _names.AsReadOnly();

    private TorchCheckpoint(string path, List<TorchFile> files, Dictionary<string, TorchFile> fileOf, List<string> names)
    {
        Path = path;
        _files = files;
        _fileOf = fileOf;
        _names = names;
    }

    /// <param name="pathOrDirectory">A directory (pytorch_model.bin, else pytorch_model.bin.index.json), a checkpoint file, or
    /// an index .json.</param>
    public static TorchCheckpoint Open(string pathOrDirectory)
    {
        string p = System.IO.Path.GetFullPath(pathOrDirectory);
        if (Directory.Exists(p))
        {
            if (File.Exists(System.IO.Path.Combine(p, FileName))) p = System.IO.Path.Combine(p, FileName);
            else if (File.Exists(System.IO.Path.Combine(p, IndexName))) p = System.IO.Path.Combine(p, IndexName);
            else throw new FileNotFoundException($"{p} has neither {FileName} nor {IndexName}", System.IO.Path.Combine(p, FileName));
        }
        if (!File.Exists(p)) throw new FileNotFoundException($"{p} does not exist", p);
        if (p.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return FromIndex(p);
        var file = TorchFile.Open(p);
        return new TorchCheckpoint(p, [file], file.Names.ToDictionary(n => n, _ => file, StringComparer.Ordinal), [.. file.Names]);
    }

    private static TorchCheckpoint FromIndex(string indexPath)
    {
        var files = new List<TorchFile>();
        var fileOf = new Dictionary<string, TorchFile>(StringComparer.Ordinal);
        var names = new List<string>();
        try
        {
            foreach (var (name, shardPath) in SafetensorsModel.ResolveWeightMap(indexPath))
            {
                var file = files.Find(f => f.Path == shardPath);
                if (file is null)
                {
                    file = TorchFile.Open(shardPath);
                    files.Add(file);
                }
                if (!file.Contains(name))
                    throw new InvalidDataException($"{indexPath}: weight_map maps '{name}' to {shardPath}, which has no tensor '{name}'");
                fileOf.Add(name, file);
                names.Add(name);
            }
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
        return new TorchCheckpoint(indexPath, files, fileOf, names);
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);
    public long[] Shape(string name) => (long[])FileOf(name).Get(name).Shape.Clone();
    public string DTypeOf(string name) => FileOf(name).Get(name).Storage.DType;
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);
    public void ReadFloat32(string name, Span<float> destination) => FileOf(name).ReadFloat32(name, destination);
    public int[] ReadInt32(string name) => FileOf(name).ReadInt32(name);

    /// <summary>The elements' bytes in row-major order, little-endian (gathered by strides, swapped from a big-endian
    /// archive).</summary>
    public byte[] ReadBytes(string name) => FileOf(name).ReadBytes(name);

    private TorchFile FileOf(string name) => _fileOf.TryGetValue(name, out var f)
        ? f
        : throw new KeyNotFoundException($"tensor '{name}' not found in {Path}");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}

/// <summary>One torch.save file, memory-mapped; its state dict's tensors described on open.</summary>
internal sealed unsafe class TorchFile : IDisposable
{
    private const int ChunkElements = 1 << 20;

    // Legacy format: pickle of the magic int 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 10 bytes).
    private static ReadOnlySpan<byte> LegacyMagic => [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19];

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;
    private readonly long _length;
    private readonly Dictionary<string, TorchTensor> _tensors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (long Offset, long Length)> _records = new(StringComparer.Ordinal); // storage key -> bytes
    private bool _bigEndian;

    public string Path { get; }
    public List<string> Names { get; } = [];

    private TorchFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr, long length)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        _length = length;
    }

    public static TorchFile Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (fs.Length < 4)
        {
            long length = fs.Length;
            fs.Dispose();
            throw new InvalidDataException($"{path}: {length} bytes is too short for a PyTorch checkpoint");
        }
        var map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* basePtr = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        var file = new TorchFile(path, map, view, basePtr + view.PointerOffset, fs.Length);
        try
        {
            var head = file.Bytes(0, (int)Math.Min(file._length, 512));
            if (head.StartsWith("PK\x03\x04"u8)) file.ReadZip();
            else if (head.StartsWith(LegacyMagic)) file.ReadLegacy();
            else if (head.Length >= 262 && head[257..262].SequenceEqual("ustar"u8))
                throw new InvalidDataException($"{path}: tar-format checkpoints (torch < 0.4) are not supported");
            else
                throw new InvalidDataException($"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save pickle)");
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public TorchTensor Get(string name) => _tensors.TryGetValue(name, out var t)
        ? t
        : throw new KeyNotFoundException($"tensor '{name}' not found in {Path}");

    public float[] ReadFloat32(string name)
    {
        var result = new float[Count(Get(name), name)];
        ReadFloat32(name, result);
        return result;
    }

    public void ReadFloat32(string name, Span<float> destination)
    {
        var t = Get(name);
        if (!ElementConvert.CanReadAsFloat(t.Storage.DType))
            throw new NotSupportedException($"tensor '{name}' in {Path} has dtype {t.Storage.DType}, which cannot be read as float");
        if (destination.Length != t.ElementCount)
            throw new ArgumentException($"destination has {destination.Length} elements; tensor '{name}' in {Path} has {t.ElementCount}",
                nameof(destination));
        var scratch = Scratch(t, destination.Length);
        for (int i = 0; i < destination.Length; i += ChunkElements)
        {
            int count = Math.Min(ChunkElements, destination.Length - i);
            ElementConvert.ToFloat(t.Storage.DType, Elements(t, i, count, scratch), destination.Slice(i, count));
        }
    }

    public int[] ReadInt32(string name)
    {
        var t = Get(name);
        if (!ElementConvert.CanReadAsInt32(t.Storage.DType))
            throw new NotSupportedException($"tensor '{name}' in {Path} has dtype {t.Storage.DType}, which cannot be read as int32");
        var result = new int[Count(t, name)];
        var scratch = Scratch(t, result.Length);
        for (int i = 0; i < result.Length; i += ChunkElements)
        {
            int count = Math.Min(ChunkElements, result.Length - i);
            int bad = ElementConvert.ToInt32(t.Storage.DType, Elements(t, i, count, scratch), result.AsSpan(i, count), out var value);
            if (bad >= 0)
                throw new OverflowException($"tensor '{name}' in {Path}: element {i + bad} = {value} ({t.Storage.DType}) does not fit in int32");
        }
        return result;
    }

    public byte[] ReadBytes(string name)
    {
        var t = Get(name);
        int size = t.Storage.ElementSize;
        long count = t.ElementCount;
        if (count > Array.MaxLength / size)
            throw new NotSupportedException($"tensor '{name}' in {Path} is {count * size} bytes, more than an array holds");
        var result = new byte[count * size];
        var scratch = Scratch(t, (int)count);
        for (int i = 0; i < count; i += ChunkElements)
        {
            int n = (int)Math.Min(ChunkElements, count - i);
            Elements(t, i, n, scratch).CopyTo(result.AsSpan(i * size, n * size));
        }
        return result;
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    // ---- element access ----

    private int Count(TorchTensor t, string name) => t.ElementCount <= Array.MaxLength
        ? (int)t.ElementCount
        : throw new NotSupportedException($"tensor '{name}' in {Path} has {t.ElementCount} elements, more than an array holds");

    // A buffer for gathered or byte-swapped chunks; none when the chunk can be read in place.
    private byte[]? Scratch(TorchTensor t, int count) =>
        t.IsContiguous && !(_bigEndian && t.Storage.ElementSize > 1) ? null : new byte[Math.Min(count, ChunkElements) * t.Storage.ElementSize];

    // Bytes of elements [start, start+count) of t in row-major order, little-endian.
    private ReadOnlySpan<byte> Elements(TorchTensor t, long start, int count, byte[]? scratch)
    {
        var s = t.Storage;
        int size = s.ElementSize;
        var (recordOffset, _) = _records[s.Key];
        long first = recordOffset + (s.ElementOffset + t.Offset) * size;
        if (scratch is null) return Bytes(first + start * size, count * size);

        var dst = scratch.AsSpan(0, count * size);
        if (t.IsContiguous) Bytes(first + start * size, count * size).CopyTo(dst);
        else
        {
            // Odometer over the multi-index of element `start`, advanced one element at a time.
            int rank = t.Shape.Length;
            var index = new long[rank];
            long rest = start, element = 0;
            for (int k = rank - 1; k >= 0; k--)
            {
                index[k] = rest % t.Shape[k];
                rest /= t.Shape[k];
                element += index[k] * t.Stride[k];
            }
            for (int i = 0; i < count; i++)
            {
                Bytes(first + element * size, size).CopyTo(dst.Slice(i * size, size));
                for (int k = rank - 1; k >= 0; k--)
                {
                    element += t.Stride[k];
                    if (++index[k] < t.Shape[k]) break;
                    element -= index[k] * t.Stride[k];
                    index[k] = 0;
                }
            }
        }
        if (_bigEndian && size > 1)
        {
            // Complex values swap each (real, imaginary) half.
            int unit = s.DType is "C64" or "C128" ? size / 2 : size;
            for (int i = 0; i < dst.Length; i += unit) dst.Slice(i, unit).Reverse();
        }
        return dst;
    }

    private ReadOnlySpan<byte> Bytes(long offset, int length)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        return new ReadOnlySpan<byte>(_base + offset, length);
    }

    // ---- zip format (formats.md §2.2) ----

    private sealed record ZipEntry(string Name, long DataOffset, long Size, int Method, int Flags);

    private void ReadZip()
    {
        var entries = ZipEntries();
        if (entries.Count == 0) throw Bad("the zip archive is empty");
        // PyTorchStreamReader takes the archive's folder from its first entry.
        int slash = entries[0].Name.IndexOf('/');
        if (slash <= 0) throw Bad($"first zip entry '{entries[0].Name}' is not inside a folder, as torch.save writes");
        string prefix = entries[0].Name[..(slash + 1)];
        var byName = new Dictionary<string, ZipEntry>(StringComparer.Ordinal);
        foreach (var e in entries) byName.TryAdd(e.Name, e);

        if (byName.TryGetValue(prefix + "byteorder", out var order))
        {
            string text = Encoding.ASCII.GetString(Stored(order)).Trim();
            _bigEndian = text switch
            {
                "little" => false,
                "big" => true,
                _ => throw Bad($"{prefix}byteorder is '{text}', expected 'little' or 'big'"),
            };
        }
        if (!byName.TryGetValue(prefix + "data.pkl", out var pkl)) throw Bad($"no {prefix}data.pkl in the archive");
        var pickle = Stored(pkl);
        var root = TorchPickle.Load(pickle, $"{Path} ({pkl.Name})", pid =>
        {
            // ('storage', StorageClass, key, location, numel)
            if (pid.Length != 5) throw new InvalidDataException($"storage id has {pid.Length} fields, expected 5");
            var (dtype, size, key, numel) = StorageId(pid);
            if (!_records.ContainsKey(key))
            {
                if (!byName.TryGetValue(prefix + "data/" + key, out var record))
                    throw new InvalidDataException($"storage '{key}' has no record {prefix}data/{key}");
                CheckStored(record);
                _records[key] = (record.DataOffset, record.Size);
            }
            CheckRecord(key, dtype, numel * size, 0);
            return new TorchStorage(key, dtype, size, numel, 0);
        }, out int consumed);
        if (consumed != pickle.Length) throw Bad($"{pkl.Name} has {pickle.Length - consumed} bytes after the pickle's STOP");
        TakeStateDict(root);
    }

    // The bytes of a small stored entry (data.pkl, byteorder).
    private ReadOnlySpan<byte> Stored(ZipEntry e)
    {
        CheckStored(e);
        if (e.Size > int.MaxValue) throw Bad($"zip entry '{e.Name}' is {e.Size} bytes, too large for a pickle");
        return Bytes(e.DataOffset, (int)e.Size);
    }

    private void CheckStored(ZipEntry e)
    {
        if ((e.Flags & 1) != 0) throw Bad($"zip entry '{e.Name}' is encrypted");
        if (e.Method != 0) throw Bad($"zip entry '{e.Name}' uses compression method {e.Method}; torch.save stores entries uncompressed");
    }

    // Central directory (ZIP64 aware) -> entries with the offset of their data.
    private List<ZipEntry> ZipEntries()
    {
        long eocd = -1;
        for (long p = _length - 22; p >= Math.Max(0, _length - 22 - 0xFFFF); p--)
            if (U32(p) == 0x06054b50) { eocd = p; break; }
        if (eocd < 0) throw Bad("zip end-of-central-directory record not found (truncated file?)");
        long count = U16(eocd + 10), cdOffset = U32(eocd + 16);
        if (count == 0xFFFF || cdOffset == 0xFFFFFFFF)
        {
            long locator = eocd - 20;
            if (locator < 0 || U32(locator) != 0x07064b50) throw Bad("ZIP64 end-of-central-directory locator not found");
            long zip64 = (long)U64(locator + 8);
            if (U32(zip64) != 0x06064b50) throw Bad("ZIP64 end-of-central-directory record not found");
            count = (long)U64(zip64 + 32);
            cdOffset = (long)U64(zip64 + 48);
        }
        var entries = new List<ZipEntry>();
        long pos = cdOffset;
        for (long i = 0; i < count; i++)
        {
            if (U32(pos) != 0x02014b50) throw Bad($"bad zip central directory entry at offset {pos}");
            int flags = U16(pos + 8), method = U16(pos + 10);
            long compressed = U32(pos + 20), uncompressed = U32(pos + 24);
            int nameLen = U16(pos + 28), extraLen = U16(pos + 30), commentLen = U16(pos + 32);
            long local = U32(pos + 42);
            string name = Encoding.UTF8.GetString(Span(pos + 46, nameLen));
            // ZIP64 extended information: the 0xFFFFFFFF fields, in this order.
            for (long x = pos + 46 + nameLen; x + 4 <= pos + 46 + nameLen + extraLen;)
            {
                int id = U16(x), len = U16(x + 2);
                if (id == 0x0001)
                {
                    long f = x + 4;
                    if (uncompressed == 0xFFFFFFFF) { uncompressed = (long)U64(f); f += 8; }
                    if (compressed == 0xFFFFFFFF) { compressed = (long)U64(f); f += 8; }
                    if (local == 0xFFFFFFFF) local = (long)U64(f);
                }
                x += 4 + len;
            }
            if (U32(local) != 0x04034b50) throw Bad($"zip entry '{name}': no local header at offset {local}");
            long data = local + 30 + U16(local + 26) + U16(local + 28);
            long size = method == 0 ? uncompressed : compressed;
            if (size < 0 || data > _length - size) throw Bad($"zip entry '{name}' ({size} bytes at {data}) runs past the end of the file");
            entries.Add(new ZipEntry(name, data, size, method, flags));
            pos += 46 + nameLen + extraLen + commentLen;
        }
        return entries;
    }

    // ---- legacy format (formats.md §2.5) ----

    private void ReadLegacy()
    {
        long pos = 0;
        object? Next(string what)
        {
            var span = Span(pos, (int)Math.Min(_length - pos, int.MaxValue));
            var value = TorchPickle.Load(span, $"{Path} ({what} pickle at byte {pos})", _ =>
                throw new InvalidDataException($"the {what} pickle may not reference storages"), out int used);
            pos += used;
            return value;
        }
        if (Next("magic") is not BigInteger magic || magic != BigInteger.Parse("1950a86a20f9469cfc6c", System.Globalization.NumberStyles.HexNumber))
            throw Bad("legacy magic number mismatch");
        if (Next("protocol version") is not long version || version != 1001)
            throw Bad("legacy protocol version is not 1001");
        Next("sys_info"); // little_endian there describes the writer; storages are always written little-endian

        // Root storages: key -> (element size, numel) as the main pickle declares them.
        var declared = new Dictionary<string, (string DType, int Size, long Numel)>(StringComparer.Ordinal);
        var main = Span(pos, (int)Math.Min(_length - pos, int.MaxValue));
        var root = TorchPickle.Load(main, $"{Path} (main pickle at byte {pos})", pid =>
        {
            // ('storage', StorageClass, root_key, location, numel, view_metadata)
            if (pid.Length != 6) throw new InvalidDataException($"storage id has {pid.Length} fields, expected 6");
            var (dtype, size, key, numel) = StorageId(pid);
            if (declared.TryGetValue(key, out var d) && (d.Size != size || d.Numel != numel))
                throw new InvalidDataException($"storage '{key}' is declared twice with different sizes");
            declared[key] = (dtype, size, numel);
            switch (pid[5])
            {
                case null:
                    return new TorchStorage(key, dtype, size, numel, 0);
                case object?[] { Length: 3 } v when v[1] is long offset && v[2] is long viewSize && offset >= 0 && viewSize >= 0
                                                     && offset <= numel - viewSize:
                    return new TorchStorage(key, dtype, size, viewSize, offset);
                default:
                    throw new InvalidDataException($"storage '{key}': view metadata must be None or (key, offset, size) inside the storage");
            }
        }, out int mainUsed);
        pos += mainUsed;
        if (Next("storage keys") is not List<object?> keys) throw Bad("legacy storage key list is not a list");
        foreach (var k in keys)
        {
            if (k is not string key || !declared.TryGetValue(key, out var d))
                throw Bad($"storage key list names {k ?? "None"}, which no tensor references");
            if (_records.ContainsKey(key)) throw Bad($"storage key list names '{key}' twice");
            if (pos > _length - 8) throw Bad($"truncated: storage '{key}' header at byte {pos} runs past the end");
            long numel = (long)U64(pos);
            if (numel != d.Numel) throw Bad($"storage '{key}' holds {numel} elements on disk, the pickle declares {d.Numel}");
            long bytes = numel * d.Size;
            if (numel < 0 || bytes > _length - pos - 8) throw Bad($"truncated: storage '{key}' ({bytes} bytes at byte {pos + 8}) runs past the end");
            _records[key] = (pos + 8, bytes);
            pos += 8 + bytes;
        }
        var missing = declared.Keys.Where(k => !_records.ContainsKey(k)).ToList();
        if (missing.Count > 0) throw Bad($"storages {string.Join(", ", missing.Take(4))} are referenced but not stored");
        TakeStateDict(root);
    }

    // ---- shared ----

    private static (string DType, int Size, string Key, long Numel) StorageId(object?[] pid)
    {
        if (pid[1] is not PickleGlobal { Kind: GlobalKind.Storage } g)
            throw new InvalidDataException("storage id does not name a torch storage class");
        if (pid[2] is not string key) throw new InvalidDataException("storage key is not a string");
        if (pid[4] is not long numel || numel < 0) throw new InvalidDataException($"storage '{key}' numel is not a non-negative int");
        if (numel > long.MaxValue / g.ElementSize) throw new InvalidDataException($"storage '{key}' numel {numel} overflows");
        return (g.DType!, g.ElementSize, key, numel);
    }

    private void CheckRecord(string key, string dtype, long bytes, long offsetBytes)
    {
        var (_, length) = _records[key];
        if (offsetBytes + bytes > length)
            throw new InvalidDataException($"storage '{key}' ({dtype}) needs {offsetBytes + bytes} bytes; its record holds {length}");
    }

    private void TakeStateDict(object? root)
    {
        if (root is not PickleDict dict)
            throw Bad($"the checkpoint holds {(root is null ? "None" : root.GetType().Name)}, not a state dict (a dict of tensors)");
        foreach (var (k, v) in dict.Items)
        {
            if (k is not string name) throw Bad($"state dict key {k} is not a string");
            if (v is not TorchTensor t) throw Bad($"state dict entry '{name}' is not a tensor");
            CheckRecord(t.Storage.Key, t.Storage.DType, t.Storage.Numel * t.Storage.ElementSize, t.Storage.ElementOffset * t.Storage.ElementSize);
            _tensors.Add(name, t);
            Names.Add(name);
        }
    }

    private ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > _length - length)
            throw Bad($"truncated: {length} bytes at offset {offset} run past the end of the {_length}-byte file");
        return Bytes(offset, length);
    }

    private ushort U16(long offset) => BinaryPrimitives.ReadUInt16LittleEndian(Span(offset, 2));
    private uint U32(long offset) => BinaryPrimitives.ReadUInt32LittleEndian(Span(offset, 4));
    private ulong U64(long offset) => BinaryPrimitives.ReadUInt64LittleEndian(Span(offset, 8));

    private InvalidDataException Bad(string message) => new($"{Path}: {message}");
}
