// Precision casts between fp32 and the 16-bit storage formats, which live in ArrayView<ushort> as raw bit patterns
// (ILGPU has no bf16 type, and System.Half cannot be used in kernels). Integer bit operations only, so the kernels
// and the CPU references share the scalar functions below and agree bit for bit on every device.
//   ToBf16 / ToF16:     x[n] fp32 -> y[n] bits, round to nearest even, overflow to ±inf, NaN stays NaN (made quiet,
//                       sign and top payload bits kept); f16 subnormals are rounded exactly.
//   FromBf16 / FromF16: x[n] bits -> y[n] fp32, exact (bf16 is the top half of an fp32; an f16 NaN comes back quiet,
//                       as System.Half does).
// Aligned views (fp32 on 16 bytes, 16-bit on 8) take a four-elements-a-thread vector kernel.
// Backward of a cast is the reverse cast of the gradient (a straight-through estimator for the rounding), so no
// separate backward functions exist.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Util;

namespace IlgpuTune.Kernels;

public static class Cast
{
    // ---- scalar conversions (device and host) ----

    internal static ushort FloatToBf16(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) return (ushort)((bits >> 16) | 0x0040); // NaN: truncation could make it inf
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16); // ties to even; a carry out of the exponent gives inf
    }

    internal static float Bf16ToFloat(ushort h) => Interop.IntAsFloat((uint)h << 16);

    internal static ushort FloatToF16(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        uint sign = (bits >> 16) & 0x8000;
        uint abs = bits & 0x7FFFFFFF;
        if (abs > 0x7F800000) return (ushort)(sign | 0x7E00 | ((abs >> 13) & 0x3FF)); // NaN
        if (abs >= 0x477FF000) return (ushort)(sign | 0x7C00); // >= 65520, halfway past the largest f16 (65504): inf
        if (abs >= 0x38800000) // normal in f16 (>= 2^-14): rebias the exponent (127 -> 15), round off 13 mantissa bits
        {
            uint a = abs - 0x38000000;
            return (ushort)(sign | ((a + 0xFFF + ((a >> 13) & 1)) >> 13));
        }
        if (abs <= 0x33000000) return (ushort)sign; // <= 2^-25, half the smallest subnormal: ties to even, so zero
        // Subnormal: x / 2^-24 rounded to the nearest even integer. x = mant * 2^(e-150) with the implicit bit in mant.
        int shift = 126 - (int)(abs >> 23); // 14..24
        uint mant = (abs & 0x7FFFFF) | 0x800000;
        uint q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1) != 0)) q++;
        return (ushort)(sign | q);
    }

    internal static float F16ToFloat(ushort h)
    {
        uint sign = (uint)(h & 0x8000) << 16;
        uint exp = (uint)(h >> 10) & 0x1F, mant = (uint)h & 0x3FF;
        if (exp == 0x1F) return Interop.IntAsFloat(sign | 0x7F800000 | (mant != 0 ? 0x400000 | (mant << 13) : 0)); // inf, NaN
        if (exp != 0) return Interop.IntAsFloat(sign | ((exp + 112) << 23) | (mant << 13));
        // Zero or subnormal: mant * 2^-24, renormalized so the leading one becomes the implicit bit.
        if (mant == 0) return Interop.IntAsFloat(sign);
        uint e = 113; // fp32 exponent field of 2^-14, the scale of mant's bit 10
        while ((mant & 0x400) == 0)
        {
            mant <<= 1;
            e--;
        }
        return Interop.IntAsFloat(sign | (e << 23) | ((mant & 0x3FF) << 13));
    }

    // ---- device kernels: grid-stride over n ----

    static void ToBf16Kernel(FloatView x, long n, ArrayView<ushort> y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = FloatToBf16(x[i]);
    }

    static void FromBf16Kernel(ArrayView<ushort> x, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = Bf16ToFloat(x[i]);
    }

    static void ToF16Kernel(FloatView x, long n, ArrayView<ushort> y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = FloatToF16(x[i]);
    }

    static void FromF16Kernel(ArrayView<ushort> x, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = F16ToFloat(x[i]);
    }

    // 16-byte fp32 loads and 8-byte 16-bit stores, four elements a thread (the scalar kernels reach ~40% of copy
    // bandwidth with their 2-byte stores); the last n % 4 elements go to the first threads. f16: 1 for f16, 0 for bf16.
    static void ToHalfVecKernel(FloatView x, long n, ArrayView<ushort> y, int f16)
    {
        var x4 = x.Cast<Float4>();
        var y4 = y.Cast<ulong>();
        long quads = n / 4;
        for (long i = Grid.GlobalIndex.X; i < quads; i += Launch.GridStride())
        {
            Float4 v = x4[i];
            y4[i] = f16 != 0
                ? FloatToF16(v.X) | (ulong)FloatToF16(v.Y) << 16 | (ulong)FloatToF16(v.Z) << 32 | (ulong)FloatToF16(v.W) << 48
                : FloatToBf16(v.X) | (ulong)FloatToBf16(v.Y) << 16 | (ulong)FloatToBf16(v.Z) << 32 | (ulong)FloatToBf16(v.W) << 48;
        }
        long tail = quads * 4 + Grid.GlobalIndex.X;
        if (tail < n) y[tail] = f16 != 0 ? FloatToF16(x[tail]) : FloatToBf16(x[tail]);
    }

    static void FromHalfVecKernel(ArrayView<ushort> x, long n, FloatView y, int f16)
    {
        var x4 = x.Cast<ulong>();
        var y4 = y.Cast<Float4>();
        long quads = n / 4;
        for (long i = Grid.GlobalIndex.X; i < quads; i += Launch.GridStride())
        {
            ulong v = x4[i];
            ushort a = (ushort)v, b = (ushort)(v >> 16), c = (ushort)(v >> 32), d = (ushort)(v >> 48);
            y4[i] = f16 != 0
                ? new Float4(F16ToFloat(a), F16ToFloat(b), F16ToFloat(c), F16ToFloat(d))
                : new Float4(Bf16ToFloat(a), Bf16ToFloat(b), Bf16ToFloat(c), Bf16ToFloat(d));
        }
        long tail = quads * 4 + Grid.GlobalIndex.X;
        if (tail < n) y[tail] = f16 != 0 ? F16ToFloat(x[tail]) : Bf16ToFloat(x[tail]);
    }

    static bool Vectorizable(FloatView f, ArrayView<ushort> h) => Launch.AlignedTo(f, 16) && Launch.AlignedTo(h, 8);

    static void ToHalfVec(KernelRegistry k, FloatView x, long n, ArrayView<ushort> y, int f16)
    {
        var kernel = k.Get<Action<KernelConfig, FloatView, long, ArrayView<ushort>, int>>(new("cast.tohalf.v4", ToHalfVecKernel));
        kernel(Launch.Flat(k, Math.Max(n / 4, n % 4)), x, n, y, f16);
    }

    static void FromHalfVec(KernelRegistry k, ArrayView<ushort> x, long n, FloatView y, int f16)
    {
        var kernel = k.Get<Action<KernelConfig, ArrayView<ushort>, long, FloatView, int>>(new("cast.fromhalf.v4", FromHalfVecKernel));
        kernel(Launch.Flat(k, Math.Max(n / 4, n % 4)), x, n, y, f16);
    }

    // ---- launchers ----

    // x[n] fp32 -> y[n] bf16 bits
    public static void ToBf16(KernelRegistry k, FloatView x, long n, ArrayView<ushort> y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (Vectorizable(x, y))
        {
            ToHalfVec(k, x, n, y, 0);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, FloatView, long, ArrayView<ushort>>>(new("cast.tobf16", ToBf16Kernel));
        kernel(Launch.Flat(k, n), x, n, y);
    }

    // x[n] bf16 bits -> y[n] fp32
    public static void FromBf16(KernelRegistry k, ArrayView<ushort> x, long n, FloatView y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (Vectorizable(y, x))
        {
            FromHalfVec(k, x, n, y, 0);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, ArrayView<ushort>, long, FloatView>>(new("cast.frombf16", FromBf16Kernel));
        kernel(Launch.Flat(k, n), x, n, y);
    }

    // x[n] fp32 -> y[n] f16 bits
    public static void ToF16(KernelRegistry k, FloatView x, long n, ArrayView<ushort> y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (Vectorizable(x, y))
        {
            ToHalfVec(k, x, n, y, 1);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, FloatView, long, ArrayView<ushort>>>(new("cast.tof16", ToF16Kernel));
        kernel(Launch.Flat(k, n), x, n, y);
    }

    // x[n] f16 bits -> y[n] fp32
    public static void FromF16(KernelRegistry k, ArrayView<ushort> x, long n, FloatView y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (Vectorizable(y, x))
        {
            FromHalfVec(k, x, n, y, 1);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, ArrayView<ushort>, long, FloatView>>(new("cast.fromf16", FromF16Kernel));
        kernel(Launch.Flat(k, n), x, n, y);
    }

    // ---- CPU reference: n = x.Length ----

    public static void ToBf16Cpu(ReadOnlySpan<float> x, Span<ushort> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = FloatToBf16(x[i]);
    }

    public static void FromBf16Cpu(ReadOnlySpan<ushort> x, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = Bf16ToFloat(x[i]);
    }

    public static void ToF16Cpu(ReadOnlySpan<float> x, Span<ushort> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = FloatToF16(x[i]);
    }

    public static void FromF16Cpu(ReadOnlySpan<ushort> x, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = F16ToFloat(x[i]);
    }
}
