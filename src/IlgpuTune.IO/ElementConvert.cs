using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>
/// Element-wise conversion of little-endian safetensors data to float / int. Sources may be unaligned (the format does not
/// guarantee alignment), which MemoryMarshal.Cast tolerates on x64 and arm64.
/// </summary>
internal static class ElementConvert
{
    // fp8 formats decoded once into 256-entry tables. E4M3 (= torch float8_e4m3fn): bias 7, no inf, NaN = S.1111.111.
    // FNUZ variants: bias 8 / 16, no inf, no -0, NaN = 0x80 only. E8M0: 2^(e-127), NaN = 0xFF.
    private static readonly float[] F8E5M2 = Table(b => HalfBits.F16ToFloat((ushort)(b << 8)));
    private static readonly float[] F8E4M3 = Table(b => (b & 0x7F) == 0x7F ? float.NaN : MiniFloat(b, 3, 7));
    private static readonly float[] F8E4M3Fnuz = Table(b => b == 0x80 ? float.NaN : MiniFloat(b, 3, 8));
    private static readonly float[] F8E5M2Fnuz = Table(b => b == 0x80 ? float.NaN : MiniFloat(b, 2, 16));
    private static readonly float[] F8E8M0 = Table(b => b == 0xFF ? float.NaN : (float)Math.ScaleB(1.0, b - 127));

    public static bool CanReadAsFloat(string dtype) => dtype is "F32" or "F16" or "BF16" or "F64" or "BOOL" or "U8" or "I8"
        or "I16" or "U16" or "I32" or "U32" or "I64" or "U64" or "F8_E5M2" or "F8_E4M3" or "F8_E4M3FNUZ" or "F8_E5M2FNUZ"
        or "F8_E8M0";

    public static bool CanReadAsInt32(string dtype) =>
        dtype is "BOOL" or "U8" or "I8" or "I16" or "U16" or "I32" or "U32" or "I64" or "U64";

    /// <summary>src: dst.Length elements of <paramref name="dtype"/> (CanReadAsFloat must hold).</summary>
    public static void ToFloat(string dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (dtype)
        {
            case "F32": src.CopyTo(MemoryMarshal.AsBytes(dst)); break;
            case "F16": TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst); break;
            case "BF16":
                var bf = MemoryMarshal.Cast<byte, ushort>(src);
                for (int i = 0; i < dst.Length; i++) dst[i] = HalfBits.Bf16ToFloat(bf[i]);
                break;
            case "F64": Widen<double, float>(src, dst); break;
            case "U8": Widen<byte, float>(src, dst); break;
            case "I8": Widen<sbyte, float>(src, dst); break;
            case "I16": Widen<short, float>(src, dst); break;
            case "U16": Widen<ushort, float>(src, dst); break;
            case "I32": Widen<int, float>(src, dst); break;
            case "U32": Widen<uint, float>(src, dst); break;
            case "I64": Widen<long, float>(src, dst); break;
            case "U64": Widen<ulong, float>(src, dst); break;
            case "BOOL":
                for (int i = 0; i < dst.Length; i++) dst[i] = src[i] != 0 ? 1f : 0f;
                break;
            case "F8_E5M2": Lookup(F8E5M2, src, dst); break;
            case "F8_E4M3": Lookup(F8E4M3, src, dst); break;
            case "F8_E4M3FNUZ": Lookup(F8E4M3Fnuz, src, dst); break;
            case "F8_E5M2FNUZ": Lookup(F8E5M2Fnuz, src, dst); break;
            case "F8_E8M0": Lookup(F8E8M0, src, dst); break;
            default: throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not convertible to float");
        }
    }

    /// <summary>
    /// src: dst.Length elements of <paramref name="dtype"/> (CanReadAsInt32 must hold). Returns the index of the first element
    /// outside the int32 range (its value in <paramref name="badValue"/>), or -1 when all fit.
    /// </summary>
    public static int ToInt32(string dtype, ReadOnlySpan<byte> src, Span<int> dst, out string? badValue)
    {
        badValue = null;
        switch (dtype)
        {
            case "I32": src.CopyTo(MemoryMarshal.AsBytes(dst)); return -1;
            case "U8": Widen<byte, int>(src, dst); return -1;
            case "I8": Widen<sbyte, int>(src, dst); return -1;
            case "I16": Widen<short, int>(src, dst); return -1;
            case "U16": Widen<ushort, int>(src, dst); return -1;
            case "BOOL":
                for (int i = 0; i < dst.Length; i++) dst[i] = src[i] != 0 ? 1 : 0;
                return -1;
            case "U32": return Checked<uint>(src, dst, out badValue);
            case "I64": return Checked<long>(src, dst, out badValue);
            case "U64": return Checked<ulong>(src, dst, out badValue);
            default: throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not convertible to int32");
        }
    }

    private static void Widen<TFrom, TTo>(ReadOnlySpan<byte> src, Span<TTo> dst)
        where TFrom : unmanaged, INumberBase<TFrom> where TTo : INumberBase<TTo> =>
        TensorPrimitives.ConvertTruncating(MemoryMarshal.Cast<byte, TFrom>(src), dst);

    private static int Checked<T>(ReadOnlySpan<byte> src, Span<int> dst, out string? badValue)
        where T : unmanaged, IBinaryInteger<T>
    {
        var s = MemoryMarshal.Cast<byte, T>(src);
        for (int i = 0; i < s.Length; i++)
        {
            long v = long.CreateSaturating(s[i]); // ulong over long.MaxValue saturates, still out of range
            if (v is < int.MinValue or > int.MaxValue)
            {
                badValue = s[i].ToString();
                return i;
            }
            dst[i] = (int)v;
        }
        badValue = null;
        return -1;
    }

    private static void Lookup(float[] table, ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int i = 0; i < dst.Length; i++) dst[i] = table[src[i]];
    }

    private static float[] Table(Func<int, float> decode) => Enumerable.Range(0, 256).Select(decode).ToArray();

    // 1 sign bit, (7 - manBits) exponent bits with the given bias, manBits mantissa bits; exponent 0 = subnormal.
    private static float MiniFloat(int b, int manBits, int bias)
    {
        int e = (b & 0x7F) >> manBits, m = b & ((1 << manBits) - 1);
        double v = e == 0 ? Math.ScaleB(m, 1 - bias - manBits) : Math.ScaleB((1 << manBits) + m, e - bias - manBits);
        return (float)((b & 0x80) != 0 ? -v : v);
    }
}
