// bitsandbytes 4-bit blockwise quantization (NF4 and FP4) with double quantization of the absmax (formats.md §5),
// byte for byte as bitsandbytes' CUDA kernels (kQuantizeBlockwise, dQuantizeNF4/FP4, dQuantize<0>, kDequantizeBlockwise).
//   Quantize:           x[n] fp32 -> packed[(n+1)/2] bytes, absmax[ceil(n/blocksize)]   (blocksize 64 for QLoRA)
//                       absmax[b] = max |x| over the block's consecutive row-major elements; s = x * (1/absmax[b]) (an
//                       all-zero block gives 0 * inf = NaN, which both trees send to code 0, as CUDA does); NF4: bnb's
//                       decision tree, strict > on fp32 literals of the code midpoints (6 midpoints are floats, so a tie goes
//                       to the lower code; 4 of the other 9 literals round to the float past the midpoint); FP4: sign bit
//                       plus the CUDA magnitude thresholds. Byte k = q[2k] << 4 | q[2k+1] (even element = high nibble); an
//                       odd n pads with the code of 0 * (1/absmax).
//   DoubleQuantize:     absmax[m] -> offset[1] = mean(absmax) (summed in double, rounded once), then QuantizeBlockwise8 of
//                       absmax - offset with the signed dynamic map, blocks of 256 -> qabsmax[m] bytes, absmax2[ceil(m/256)].
//   QuantizeBlockwise8: x[n] -> q[n] bytes, absmax[ceil(n/blocksize)]: nearest code of (x - offset) * (1/absmax) by the CUDA
//                       pivot search (an exact midpoint goes to the search's final pivot, either neighbour).
//   DequantizeAbsmax:   absmax[b] = code8[qabsmax[b]] * absmax2[b/256] + offset (two fp32 roundings, as bnb: no fma).
//   Dequantize(Bf16|F16): y[i] = code4[nibble(i)] * absmax[i/blocksize] in fp32, then (bf16 / fp16: round to nearest even).
//   DequantizeHalfNested: both in one pass for a double-quantized weight, bf16 / fp16 out, byte for byte the same.
// No backward: the quantized base weight is frozen (QLoRA trains only the adapters), and quantization is not
// differentiable. The CPU references are fp32, not generic: the spec is the exact fp32 arithmetic of the CUDA kernels.
// torch's mean of the absmax (a float32 reduction) can differ from ours in the last bit; a checkpoint stores its offset.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Numerics;
using static IlgpuTune.Numerics.Nf4Codec;

namespace IlgpuTune.Kernels;

public static class Nf4
{
    internal const int MaxGroup = 1024;

    // max that skips NaN, as CUDA's fmaxf (MathF.Max would propagate it on the CPU)
    static float MaxAbs(float acc, float v)
    {
        float a = MathF.Abs(v);
        return a > acc ? a : acc;
    }

    // dQuantize<0>: binary search over a sorted 256-entry code, then the midpoint test against the bracketing codes.
    static byte Quantize8(ArrayView<float> code, float x)
    {
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = -1f, upper = 1f, val = code[pivot];
        for (int i = 64; i > 0; i >>= 1)
        {
            if (x > val) { lowerPivot = pivot; lower = val; pivot += i; }
            else { upperPivot = pivot; upper = val; pivot -= i; }
            val = code[pivot];
        }
        if (upperPivot == 255) upper = code[255];
        if (lowerPivot == 0) lower = code[0];
        if (x > val) return (byte)(x > (upper + val) * 0.5f ? upperPivot : pivot);
        return (byte)(x < (lower + val) * 0.5f ? lowerPivot : pivot);
    }

    // ---- device kernels ----

    // One thread per quantization block: its absmax, then its bytes (blocksize is even, so no byte spans two blocks).
    static void QuantizeKernel(Index1D b, FloatView x, long n, int blocksize, int type, ArrayView<byte> packed, FloatView absmax)
    {
        long start = (long)b.X * blocksize, end = Math.Min(n, start + blocksize);
        float amax = 0f;
        for (long i = start; i < end; i++) amax = MaxAbs(amax, x[i]);
        absmax[b] = amax;
        float r = 1f / amax;
        for (long i = start; i < end; i += 2)
        {
            int hi = Quantize4(type, x[i] * r);
            int lo = Quantize4(type, i + 1 < end ? x[i + 1] * r : 0f * r);
            packed[i >> 1] = (byte)((hi << 4) | lo);
        }
    }

    // One group: strided partial sums in double, added in thread order (deterministic).
    static void MeanKernel(FloatView x, int n, FloatView mean)
    {
        var partial = SharedMemory.Allocate<double>(MaxGroup);
        double s = 0;
        for (int i = Group.IdxX; i < n; i += Group.DimX) s += x[i];
        partial[Group.IdxX] = s;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            double total = 0;
            for (int j = 0; j < Group.DimX; j++) total += partial[j];
            mean[0] = (float)(total / n);
        }
    }

    static void QuantizeBlockwise8Kernel(Index1D c, FloatView x, FloatView offset, long n, int blocksize, FloatView code,
        ArrayView<byte> q, FloatView absmax)
    {
        float off = offset[0];
        long start = (long)c.X * blocksize, end = Math.Min(n, start + blocksize);
        float amax = 0f;
        for (long i = start; i < end; i++) amax = MaxAbs(amax, x[i] - off);
        absmax[c] = amax;
        float r = 1f / amax;
        for (long i = start; i < end; i++) q[i] = Quantize8(code, (x[i] - off) * r);
    }

    // Two kernels, not one: ILGPU fuses a multiply feeding an add into one fma, which rounds once where bnb rounds twice.
    static void DequantizeAbsmaxScaleKernel(Index1D b, ArrayView<byte> qabsmax, FloatView absmax2, FloatView code8, int blocksize2,
        FloatView absmax)
    {
        absmax[b] = code8[(int)qabsmax[b]] * absmax2[b.X / blocksize2];
    }

    static void DequantizeAbsmaxOffsetKernel(Index1D b, FloatView offset, FloatView absmax)
    {
        absmax[b] += offset[0];
    }

    static float Dequantize4(ArrayView<byte> packed, FloatView absmax, FloatView code4, int blocksize, long i)
    {
        int v = packed[i >> 1];
        int nibble = (i & 1) == 0 ? v >> 4 : v & 15;
        return code4[nibble] * absmax[i / blocksize];
    }

    static void DequantizeKernel(ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = Dequantize4(packed, absmax, code4, blocksize, i);
    }

    static void DequantizeHalfKernel(ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize, int isF16,
        ArrayView<ushort> y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float v = Dequantize4(packed, absmax, code4, blocksize, i);
            y[i] = isF16 != 0 ? Cast.FloatToF16(v) : Cast.FloatToBf16(v);
        }
    }

    // Fast path of DequantizeBf16/F16: eight elements per thread, one 32-bit word of packed nibbles in and one 16-byte store
    // out, the absmax block found by a shift (blocksize a power of two >= 8, so the eight share it). Byte k of the word
    // holds elements 2k (high nibble) and 2k+1, which land in output word k low and high half (little-endian).
    static void DequantizeHalf8Kernel(ArrayView<uint> packed, FloatView absmax, FloatView code4, long groups, int log2Blocksize, int isF16,
        ArrayView<ILGPU.Util.Int4> y)
    {
        for (long g = Grid.GlobalIndex.X; g < groups; g += Launch.GridStride())
        {
            uint w = packed[g];
            y[g] = HalfEight(w, absmax[(g << 3) >> log2Blocksize], code4, isF16);
        }
    }

    // Double-quantized weights: the same, with each thread rebuilding its block's absmax (code8[q] * absmax2 + offset)
    // instead of a separate pass over the blocks. bnb rounds the product and the sum separately; the product goes through
    // mul.rn, which ptxas never contracts into an fma (ILGPU and ptxas would contract a plain multiply-add).
    static void DequantizeHalf8NestedKernel(ArrayView<uint> packed, ArrayView<byte> qabsmax, FloatView absmax2, FloatView offset,
        FloatView code8, FloatView code4, long groups, int log2Blocksize, int isF16, ArrayView<ILGPU.Util.Int4> y)
    {
        float off = offset[0];
        for (long g = Grid.GlobalIndex.X; g < groups; g += Launch.GridStride())
        {
            uint w = packed[g];
            long blk = (g << 3) >> log2Blocksize;
            y[g] = HalfEight(w, MulRn(code8[(int)qabsmax[blk]], absmax2[blk / NestedBlockSize]) + off, code4, isF16);
        }
    }

    internal static float MulRn(float a, float b)
    {
        float r;
        if (CudaAsm.IsSupported) CudaAsm.Emit("mul.rn.f32 %0, %1, %2;", out r, a, b);
        else r = a * b;
        return r;
    }

    // The eight elements of one packed word, dequantized with absmax a, as one 16-byte store.
    static ILGPU.Util.Int4 HalfEight(uint w, float a, FloatView code4, int isF16) =>
        new((int)HalfPair(w, 0, a, code4, isF16), (int)HalfPair(w, 8, a, code4, isF16),
            (int)HalfPair(w, 16, a, code4, isF16), (int)HalfPair(w, 24, a, code4, isF16));

    static uint HalfPair(uint w, int shift, float a, FloatView code4, int isF16)
    {
        int b = (int)((w >> shift) & 0xFF);
        float even = code4[b >> 4] * a, odd = code4[b & 15] * a;
        return isF16 != 0
            ? Cast.FloatToF16(even) | ((uint)Cast.FloatToF16(odd) << 16)
            : Cast.FloatToBf16(even) | ((uint)Cast.FloatToBf16(odd) << 16);
    }

    // ---- launchers ----

    static void CheckBlocksize(int blocksize)
    {
        if (blocksize < 2 || (blocksize & (blocksize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(blocksize), blocksize, "blocksize must be a power of two >= 2");
    }

    // x[n] fp32 -> packed[(n+1)/2], absmax[Blocks(n, blocksize)]
    public static void Quantize(KernelRegistry k, FloatView x, long n, int blocksize, QuantType type, ArrayView<byte> packed, FloatView absmax)
    {
        CheckBlocksize(blocksize);
        long blocks = Blocks(n, blocksize);
        Launch.Need(x, n, nameof(x)); Launch.Need(packed, (n + 1) / 2, nameof(packed)); Launch.Need(absmax, blocks, nameof(absmax));
        if (n == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, long, int, int, ArrayView<byte>, FloatView>>(new("nf4.quantize", QuantizeKernel));
        kernel((int)blocks, x, n, blocksize, (int)type, packed, absmax);
    }

    // absmax[m] -> offset[1] (mean), qabsmax[m], absmax2[Blocks(m, 256)]; code8 = DynamicMap() (256)
    public static void DoubleQuantize(KernelRegistry k, FloatView absmax, FloatView code8, int m, ArrayView<byte> qabsmax,
        FloatView absmax2, FloatView offset)
    {
        Launch.Need(absmax, m, nameof(absmax)); Launch.Need(offset, 1, nameof(offset));
        if (m == 0) return;
        var mean = k.Get<Action<KernelConfig, FloatView, int, FloatView>>(new("nf4.mean", MeanKernel));
        mean(new KernelConfig(1, Math.Min(k.RowGroupSize, MaxGroup)), absmax, m, offset);
        QuantizeBlockwise8(k, absmax, offset, code8, m, NestedBlockSize, qabsmax, absmax2);
    }

    // x[n], offset[1], code[256] (sorted) -> q[n], absmax[Blocks(n, blocksize)]: blockwise 8-bit of x - offset
    public static void QuantizeBlockwise8(KernelRegistry k, FloatView x, FloatView offset, FloatView code, long n, int blocksize,
        ArrayView<byte> q, FloatView absmax)
    {
        CheckBlocksize(blocksize);
        long blocks = Blocks(n, blocksize);
        Launch.Need(x, n, nameof(x)); Launch.Need(offset, 1, nameof(offset)); Launch.Need(code, 256, nameof(code));
        Launch.Need(q, n, nameof(q)); Launch.Need(absmax, blocks, nameof(absmax));
        if (n == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, FloatView, long, int, FloatView, ArrayView<byte>, FloatView>>(
            new("nf4.quantize8", QuantizeBlockwise8Kernel));
        kernel((int)blocks, x, offset, n, blocksize, code, q, absmax);
    }

    // qabsmax[m], absmax2[Blocks(m, 256)], offset[1], code8[256] -> absmax[m]
    public static void DequantizeAbsmax(KernelRegistry k, ArrayView<byte> qabsmax, FloatView absmax2, FloatView offset, FloatView code8,
        int m, FloatView absmax)
    {
        Launch.Need(qabsmax, m, nameof(qabsmax)); Launch.Need(absmax2, Blocks(m, NestedBlockSize), nameof(absmax2));
        Launch.Need(offset, 1, nameof(offset)); Launch.Need(code8, 256, nameof(code8)); Launch.Need(absmax, m, nameof(absmax));
        if (m == 0) return;
        var scale = k.Get<Action<Index1D, ArrayView<byte>, FloatView, FloatView, int, FloatView>>(
            new("nf4.dequantize.absmax.scale", DequantizeAbsmaxScaleKernel));
        scale(m, qabsmax, absmax2, code8, NestedBlockSize, absmax);
        var add = k.Get<Action<Index1D, FloatView, FloatView>>(new("nf4.dequantize.absmax.offset", DequantizeAbsmaxOffsetKernel));
        add(m, offset, absmax);
    }

    // packed[(n+1)/2], absmax[Blocks(n, blocksize)], code4[16] -> y[n] fp32
    public static void Dequantize(KernelRegistry k, ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize, FloatView y)
    {
        CheckDequantize(packed, absmax, code4, n, blocksize);
        Launch.Need(y, n, nameof(y));
        if (n == 0) return;
        var kernel = k.Get<Action<KernelConfig, ArrayView<byte>, FloatView, FloatView, long, int, FloatView>>(
            new("nf4.dequantize", DequantizeKernel));
        kernel(Launch.Flat(k, n), packed, absmax, code4, n, blocksize, y);
    }

    // packed[(n+1)/2], absmax[Blocks(n, blocksize)], code4[16] -> y[n] bf16 bits
    public static void DequantizeBf16(KernelRegistry k, ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize,
        ArrayView<ushort> y) => DequantizeHalf(k, packed, absmax, code4, n, blocksize, false, y);

    // packed[(n+1)/2], absmax[Blocks(n, blocksize)], code4[16] -> y[n] fp16 bits
    public static void DequantizeF16(KernelRegistry k, ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize,
        ArrayView<ushort> y) => DequantizeHalf(k, packed, absmax, code4, n, blocksize, true, y);

    static void DequantizeHalf(KernelRegistry k, ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize, bool f16,
        ArrayView<ushort> y)
    {
        CheckDequantize(packed, absmax, code4, n, blocksize);
        Launch.Need(y, n, nameof(y));
        if (n == 0 || DequantizeHalf8(k, packed, absmax, code4, n, blocksize, f16, y)) return;
        var kernel = k.Get<Action<KernelConfig, ArrayView<byte>, FloatView, FloatView, long, int, int, ArrayView<ushort>>>(
            new("nf4.dequantize.half", DequantizeHalfKernel));
        kernel(Launch.Flat(k, n), packed, absmax, code4, n, blocksize, f16 ? 1 : 0, y);
    }

    // Eight elements a thread: whole words of packed nibbles, a block shared by the eight, 16-byte-aligned stores.
    static bool Half8Fits(ArrayView<byte> packed, long n, int blocksize, ArrayView<ushort> y) =>
        n % 8 == 0 && blocksize >= 8 && Launch.AlignedTo(packed, 4) && Launch.AlignedTo(y, 16);

    // Runs the eight-per-thread kernel when n, blocksize and the views' alignment allow; false when they do not.
    static bool DequantizeHalf8(KernelRegistry k, ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize, bool f16,
        ArrayView<ushort> y)
    {
        if (!Half8Fits(packed, n, blocksize, y)) return false;
        long groups = n / 8;
        var kernel = k.Get<Action<KernelConfig, ArrayView<uint>, FloatView, FloatView, long, int, int, ArrayView<ILGPU.Util.Int4>>>(
            new("nf4.dequantize.half8", DequantizeHalf8Kernel));
        kernel(Launch.Flat(k, groups), packed.SubView(0, groups * 4).Cast<uint>(), absmax, code4, groups, System.Numerics.BitOperations.Log2((uint)blocksize),
            f16 ? 1 : 0, y.SubView(0, n).Cast<ILGPU.Util.Int4>());
        return true;
    }

    /// <summary>
    /// Dequantizes a double-quantized weight to bf16 / fp16 bits in one pass, its absmax rebuilt per block (as
    /// DequantizeAbsmax then DequantizeBf16/F16 would, byte for byte). packed[(n+1)/2], qabsmax[m], absmax2[Blocks(m, 256)],
    /// offset[1], code8[256], code4[16] -> y[n]. False (nothing launched) when n, blocksize or alignment rule the fast path out.
    /// </summary>
    public static bool DequantizeHalfNested(KernelRegistry k, ArrayView<byte> packed, ArrayView<byte> qabsmax, FloatView absmax2, FloatView offset,
        FloatView code8, FloatView code4, long n, int blocksize, bool f16, ArrayView<ushort> y)
    {
        CheckBlocksize(blocksize);
        long m = Blocks(n, blocksize);
        Launch.Need(packed, (n + 1) / 2, nameof(packed)); Launch.Need(qabsmax, m, nameof(qabsmax));
        Launch.Need(absmax2, Blocks(m, NestedBlockSize), nameof(absmax2)); Launch.Need(offset, 1, nameof(offset));
        Launch.Need(code8, 256, nameof(code8)); Launch.Need(code4, 16, nameof(code4)); Launch.Need(y, n, nameof(y));
        if (n == 0 || !Half8Fits(packed, n, blocksize, y)) return false;
        long groups = n / 8;
        var kernel = k.Get<Action<KernelConfig, ArrayView<uint>, ArrayView<byte>, FloatView, FloatView, FloatView, FloatView, long,
                int, int, ArrayView<ILGPU.Util.Int4>>>(
            new("nf4.dequantize.half8.nested", DequantizeHalf8NestedKernel));
        kernel(Launch.Flat(k, groups), packed.SubView(0, groups * 4).Cast<uint>(), qabsmax, absmax2, offset, code8, code4, groups,
            System.Numerics.BitOperations.Log2((uint)blocksize), f16 ? 1 : 0, y.SubView(0, n).Cast<ILGPU.Util.Int4>());
        return true;
    }

    static void CheckDequantize(ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize)
    {
        CheckBlocksize(blocksize);
        Launch.Need(packed, (n + 1) / 2, nameof(packed)); Launch.Need(absmax, Blocks(n, blocksize), nameof(absmax));
        Launch.Need(code4, 16, nameof(code4));
    }

    // ---- CPU reference of the 16-bit dequantizers (Nf4Codec holds the rest of the spec) ----

    public static void DequantizeBf16Cpu(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, ReadOnlySpan<float> code4, int blocksize,
        Span<ushort> y)
    {
        var f = new float[y.Length];
        DequantizeCpu(packed, absmax, code4, blocksize, f);
        Cast.ToBf16Cpu(f, y);
    }

    public static void DequantizeF16Cpu(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, ReadOnlySpan<float> code4, int blocksize,
        Span<ushort> y)
    {
        var f = new float[y.Length];
        DequantizeCpu(packed, absmax, code4, blocksize, f);
        Cast.ToF16Cpu(f, y);
    }
}
