// GGUF v3, the file format of llama.cpp (ggml/docs/gguf.md): "GGUF", version 3, tensor count, metadata count, the
// metadata key/values, the tensor infos (name, dims innermost first, ggml type, offset into the data section), then the
// data section aligned to general.alignment (32), each tensor padded to it. Everything little-endian.
using System.Buffers.Binary;
using System.Text;

namespace IlgpuTune.IO;

/// <summary>ggml tensor types this writer emits (ggml.h numbering).</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
    BF16 = 30,
}

/// <summary>GGUF metadata value types (gguf.md numbering).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>A metadata value: a scalar, a string, or an array of one element type (Value is then an Array of it).</summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue U32(long v) => new(GgufValueType.UInt32, checked((uint)v));
    public static GgufValue I32(int v) => new(GgufValueType.Int32, v);
    public static GgufValue F32(double v) => new(GgufValueType.Float32, (float)v);
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue Str(string v) => new(GgufValueType.String, v);
    public static GgufValue Strings(string[] v) => new(GgufValueType.Array, v, GgufValueType.String);
    public static GgufValue Floats(float[] v) => new(GgufValueType.Array, v, GgufValueType.Float32);
    public static GgufValue Ints(int[] v) => new(GgufValueType.Array, v, GgufValueType.Int32);

    public override string ToString() => Value is Array a ? $"[{a.Length} × {ElementType}]" : $"{Value}";
}

/// <summary>A tensor to write: Shape in PyTorch order (rows first); the file stores it innermost first.</summary>
public sealed record GgufTensorSpec(string Name, GgmlType Type, long[] Shape)
{
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);
    public long Bytes => Ggml.RowBytes(Type, Elements, Name);
}

/// <summary>A tensor as read back: Shape in PyTorch order, Offset from the file start.</summary>
public sealed record GgufTensorInfo(string Name, GgmlType Type, long[] Shape, long Offset)
{
    public long Bytes => Ggml.RowBytes(Type, Shape.Aggregate(1L, (a, d) => a * d), Name);
}

public static class Ggml
{
    public const int QK = 32; // elements per Q8_0 / Q4_0 block

    /// <summary>Bytes of <paramref name="elements"/> values of <paramref name="type"/> (whole blocks only).</summary>
    public static long RowBytes(GgmlType type, long elements, string name) => type switch
    {
        GgmlType.F32 => elements * 4,
        GgmlType.F16 or GgmlType.BF16 => elements * 2,
        GgmlType.Q8_0 when elements % QK == 0 => elements / QK * 34,
        GgmlType.Q4_0 when elements % QK == 0 => elements / QK * 18,
        _ => throw new ArgumentException($"tensor '{name}': {elements} elements do not fill whole {type} blocks of {QK}"),
    };
}

public static class GgufWriter
{
    public const int Alignment = 32;
    private static readonly byte[] Zeros = new byte[Alignment];

    /// <summary>
    /// Writes a GGUF v3 file to <paramref name="output"/>: the header from <paramref name="metadata"/> and the tensor
    /// specs, then each tensor's bytes from <paramref name="data"/>, called once per tensor in order (so only one tensor
    /// need be in memory). Each returned buffer must be exactly the spec's byte size.
    /// </summary>
    public static void Write(Stream output, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<GgufTensorSpec> tensors,
        Func<GgufTensorSpec, ReadOnlyMemory<byte>> data)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!names.Add(t.Name)) throw new ArgumentException($"tensor '{t.Name}' is listed twice");
        var w = new BinaryWriter(output, Encoding.UTF8, leaveOpen: true);
        w.Write("GGUF"u8);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value);
        }
        long offset = 0;
        foreach (var t in tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int i = t.Shape.Length - 1; i >= 0; i--) w.Write((ulong)t.Shape[i]);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offset += Pad(t.Bytes);
        }
        w.Flush();
        output.Write(Zeros, 0, (int)(Pad(output.Position) - output.Position));
        foreach (var t in tensors)
        {
            var bytes = data(t);
            if (bytes.Length != t.Bytes)
                throw new InvalidOperationException($"tensor '{t.Name}': {bytes.Length} bytes given, {t.Bytes} expected for {t.Type} [{string.Join(", ", t.Shape)}]");
            output.Write(bytes.Span);
            output.Write(Zeros, 0, (int)(Pad(bytes.Length) - bytes.Length));
        }
    }

    private static long Pad(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValue v)
    {
        switch (v.Type)
        {
            case GgufValueType.Array:
                var items = (Array)v.Value;
                w.Write((uint)v.ElementType);
                w.Write((ulong)items.Length);
                foreach (var item in items) WriteScalar(w, v.ElementType, item);
                break;
            default:
                WriteScalar(w, v.Type, v.Value);
                break;
        }
    }

    private static void WriteScalar(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write((ulong)value); break;
            default: throw new ArgumentException($"GGUF value type {type} is not written by this writer");
        }
    }
}

/// <summary>Reads a GGUF file's header (metadata and tensor infos); tensor bytes are read on demand.</summary>
public sealed class GgufFile
{
    public required uint Version { get; init; }
    public required IReadOnlyDictionary<string, GgufValue> Metadata { get; init; }
    public required IReadOnlyList<GgufTensorInfo> Tensors { get; init; }
    public required string Path { get; init; }

    public static GgufFile Read(string path)
    {
        using var s = File.OpenRead(path);
        var r = new BinaryReader(s, Encoding.UTF8);
        if (!r.ReadBytes(4).AsSpan().SequenceEqual("GGUF"u8)) throw new InvalidDataException($"{path}: not a GGUF file (magic)");
        uint version = r.ReadUInt32();
        if (version != 3) throw new InvalidDataException($"{path}: GGUF version {version}, expected 3");
        long tensorCount = checked((long)r.ReadUInt64()), kvCount = checked((long)r.ReadUInt64());
        var meta = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        for (long i = 0; i < kvCount; i++)
        {
            string key = ReadString(r);
            var type = (GgufValueType)r.ReadUInt32();
            meta[key] = ReadValue(r, type, path);
        }
        int alignment = meta.TryGetValue("general.alignment", out var a) ? (int)(uint)a.Value : GgufWriter.Alignment;
        var infos = new List<(string, GgmlType, long[], long)>();
        for (long i = 0; i < tensorCount; i++)
        {
            string name = ReadString(r);
            var dims = new long[r.ReadUInt32()];
            for (int d = dims.Length - 1; d >= 0; d--) dims[d] = checked((long)r.ReadUInt64());
            infos.Add((name, (GgmlType)r.ReadUInt32(), dims, checked((long)r.ReadUInt64())));
        }
        long dataStart = (s.Position + alignment - 1) / alignment * alignment;
        return new GgufFile
        {
            Version = version, Metadata = meta, Path = path,
            Tensors = infos.Select(t => new GgufTensorInfo(t.Item1, t.Item2, t.Item3, dataStart + t.Item4)).ToList(),
        };
    }

    public byte[] ReadBytes(GgufTensorInfo t)
    {
        using var s = File.OpenRead(Path);
        s.Position = t.Offset;
        var buffer = new byte[t.Bytes];
        s.ReadExactly(buffer);
        return buffer;
    }

    private static string ReadString(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    private static GgufValue ReadValue(BinaryReader r, GgufValueType type, string path)
    {
        if (type != GgufValueType.Array) return new GgufValue(type, ReadScalar(r, type, path));
        var element = (GgufValueType)r.ReadUInt32();
        int n = checked((int)r.ReadUInt64());
        Array items = element switch
        {
            GgufValueType.String => new string[n],
            GgufValueType.Float32 => new float[n],
            GgufValueType.Int32 => new int[n],
            _ => new object[n],
        };
        for (int i = 0; i < n; i++) items.SetValue(ReadScalar(r, element, path), i);
        return new GgufValue(type, items, element);
    }

    private static object ReadScalar(BinaryReader r, GgufValueType type, string path) => type switch
    {
        GgufValueType.UInt8 => r.ReadByte(),
        GgufValueType.Int8 => r.ReadSByte(),
        GgufValueType.UInt16 => r.ReadUInt16(),
        GgufValueType.Int16 => r.ReadInt16(),
        GgufValueType.UInt32 => r.ReadUInt32(),
        GgufValueType.Int32 => r.ReadInt32(),
        GgufValueType.Float32 => r.ReadSingle(),
        GgufValueType.Bool => r.ReadByte() != 0,
        GgufValueType.String => ReadString(r),
        GgufValueType.UInt64 => r.ReadUInt64(),
        GgufValueType.Int64 => r.ReadInt64(),
        GgufValueType.Float64 => r.ReadDouble(),
        _ => throw new InvalidDataException($"{path}: unknown GGUF value type {(uint)type}"),
    };
}

/// <summary>ggml's reference block quantizers (ggml-quants.c quantize_row_q8_0_ref / quantize_row_q4_0_ref) and their
/// dequantizers, bit for bit: scales stored as fp16, float math in fp32.</summary>
public static class GgmlQuants
{
    /// <summary>Q8_0: per 32 values, d = amax/127 (fp16) and qs[j] = round(x[j]/d) as int8 (34 bytes a block).</summary>
    public static byte[] QuantizeQ8_0(ReadOnlySpan<float> x)
    {
        if (x.Length % Ggml.QK != 0) throw new ArgumentException($"{x.Length} values are not whole blocks of {Ggml.QK}");
        var output = new byte[x.Length / Ggml.QK * 34];
        for (int b = 0; b < x.Length / Ggml.QK; b++)
        {
            var block = x.Slice(b * Ggml.QK, Ggml.QK);
            var o = output.AsSpan(b * 34, 34);
            float amax = 0;
            foreach (float v in block) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
            BinaryPrimitives.WriteUInt16LittleEndian(o, BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < Ggml.QK; j++) o[2 + j] = (byte)(sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero);
        }
        return output;
    }

    /// <summary>Q4_0: per 32 values, d = max/-8 where max is the value of largest magnitude (fp16), q = min(15, (int)(x/d + 8.5)),
    /// values j and j+16 packed in byte j (low, high nibble); 18 bytes a block.</summary>
    public static byte[] QuantizeQ4_0(ReadOnlySpan<float> x)
    {
        if (x.Length % Ggml.QK != 0) throw new ArgumentException($"{x.Length} values are not whole blocks of {Ggml.QK}");
        var output = new byte[x.Length / Ggml.QK * 18];
        for (int b = 0; b < x.Length / Ggml.QK; b++)
        {
            var block = x.Slice(b * Ggml.QK, Ggml.QK);
            var o = output.AsSpan(b * 18, 18);
            float amax = 0, max = 0;
            foreach (float v in block)
                if (amax < MathF.Abs(v))
                {
                    amax = MathF.Abs(v);
                    max = v;
                }
            float d = max / -8f, id = d != 0 ? 1f / d : 0f;
            BinaryPrimitives.WriteUInt16LittleEndian(o, BitConverter.HalfToUInt16Bits((Half)d));
            for (int j = 0; j < Ggml.QK / 2; j++)
            {
                // (int8_t) in C truncates toward zero; x*id + 8.5 is >= 0.5 here, so this is floor.
                int q0 = Math.Min(15, (int)(sbyte)(block[j] * id + 8.5f));
                int q1 = Math.Min(15, (int)(sbyte)(block[j + Ggml.QK / 2] * id + 8.5f));
                o[2 + j] = (byte)(q0 | (q1 << 4));
            }
        }
        return output;
    }

    /// <summary>The values a Q8_0 or Q4_0 buffer stands for (ggml's dequantize_row_*).</summary>
    public static float[] Dequantize(GgmlType type, ReadOnlySpan<byte> data, long elements)
    {
        var y = new float[elements];
        int blockBytes = type == GgmlType.Q8_0 ? 34 : 18;
        for (int b = 0; b < elements / Ggml.QK; b++)
        {
            var blk = data.Slice(b * blockBytes, blockBytes);
            float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(blk));
            for (int j = 0; j < Ggml.QK; j++)
                y[b * Ggml.QK + j] = type == GgmlType.Q8_0
                    ? (sbyte)blk[2 + j] * d
                    : ((j < 16 ? blk[2 + j] & 0xF : blk[2 + j - 16] >> 4) - 8) * d;
        }
        return y;
    }
}
