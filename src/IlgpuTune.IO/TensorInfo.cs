using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>
/// One tensor entry of a safetensors header. <paramref name="DType"/> is the safetensors dtype string (formats.md §1.2);
/// [<paramref name="Begin"/>, <paramref name="End"/>) are byte offsets relative to the data buffer, which starts after the
/// 8-byte length and the header.
/// </summary>
public sealed record TensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>prod(Shape); 1 for a scalar (shape []), 0 when any dimension is 0.</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n = checked(n * d);
            return n;
        }
    }

    public long ByteLength => End - Begin;
}

/// <summary>The safetensors dtype strings, in the order of the Rust <c>Dtype</c> enum (safetensors/src/tensor.rs).</summary>
internal static class SafetensorsDTypes
{
    // The Rust writer sorts tensors by this enum order descending (then name), which puts larger dtypes first.
    private static readonly (string Name, int Bits)[] Table =
    [
        ("BOOL", 8), ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("U8", 8), ("I8", 8), ("F8_E5M2", 8), ("F8_E4M3", 8),
        ("F8_E8M0", 8), ("F8_E4M3FNUZ", 8), ("F8_E5M2FNUZ", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
        ("I32", 32), ("U32", 32), ("F32", 32), ("C64", 64), ("F64", 64), ("I64", 64), ("U64", 64),
    ];

    public static IEnumerable<string> Names => Table.Select(t => t.Name);

    /// <summary>Bits per element, or null for a string that is not a safetensors dtype (case-sensitive).</summary>
    public static int? Bits(string dtype)
    {
        foreach (var (name, bits) in Table)
            if (name == dtype) return bits;
        return null;
    }

    /// <summary>Position in the Rust enum; the writer orders by it descending.</summary>
    public static int Rank(string dtype) => Array.FindIndex(Table, t => t.Name == dtype);
}
