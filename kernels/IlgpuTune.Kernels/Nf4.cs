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

namespace IlgpuTune.Kernels;

public enum QuantType { Nf4 = 0, Fp4 = 1 }

public static class Nf4
{
    public const int BlockSize = 64;
    public const int NestedBlockSize = 256;
    const int MaxGroup = 1024;

    // bnb get_4bit_type("nf4"): index = 4-bit value (the quant_map of a checkpoint).
    public static float[] NormalFloatCode() =>
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    // CUDA's FP4 dequantization: fp4_dequantization_lut[bits & 7] times the sign (so pattern 0b1000 is -0.0).
    public static float[] Fp4Code()
    {
        float[] lut = [0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f];
        var code = new float[16];
        for (int i = 0; i < 8; i++) (code[i], code[i + 8]) = (lut[i], -lut[i]);
        return code;
    }

    public static float[] Code(QuantType type) => type == QuantType.Nf4 ? NormalFloatCode() : Fp4Code();

    // bnb create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as torch 2.11 computes it on an x86 CPU
    // (tests/fixtures/nf4): for i = 0..6 the midpoints of linspace(0.1, 1, 2^i + 1) times ±10^(i-6), then 0 and 1, sorted.
    // A table, not the formula: torch's vectorized linspace rounds some entries differently from its scalar formula. A
    // checkpoint carries its own copy (nested_quant_map); prefer that when loading.
    public static float[] DynamicMap() =>
    [
        -0.992968738079071f, -0.9789062738418579f, -0.96484375f, -0.9507812261581421f, -0.936718761920929f, -0.922656238079071f,
        -0.9085937738418579f, -0.89453125f, -0.8804687261581421f, -0.866406261920929f, -0.852343738079071f, -0.8382812738418579f,
        -0.82421875f, -0.8101562261581421f, -0.796093761920929f, -0.782031238079071f, -0.7679687738418579f, -0.75390625f,
        -0.7398437261581421f, -0.725781261920929f, -0.7117187976837158f, -0.6976562738418579f, -0.68359375f, -0.6695312261581421f,
        -0.655468761920929f, -0.6414062976837158f, -0.6273437738418579f, -0.61328125f, -0.5992187261581421f, -0.585156261920929f,
        -0.5710937976837158f, -0.5570312738418579f, -0.54296875f, -0.5289062261581421f, -0.5148437023162842f, -0.500781238079071f,
        -0.48671871423721313f, -0.47265625f, -0.4585937261581421f, -0.44453126192092896f, -0.43046873807907104f, -0.4164062440395355f,
        -0.40234375f, -0.3882812261581421f, -0.37421876192092896f, -0.36015623807907104f, -0.3460937440395355f, -0.33203125f,
        -0.3179687261581421f, -0.30390626192092896f, -0.28984373807907104f, -0.2757812738418579f, -0.26171875f, -0.24765624105930328f,
        -0.23359374701976776f, -0.21953125298023224f, -0.20546874403953552f, -0.19140625f, -0.17734375596046448f, -0.16328124701976776f,
        -0.14921875298023224f, -0.13515624403953552f, -0.12109375f, -0.10703125596046448f, -0.09859374910593033f, -0.09578125923871994f,
        -0.09296875447034836f, -0.09015624970197678f, -0.08734375238418579f, -0.08453124761581421f, -0.08171875774860382f, -0.07890625298023224f,
        -0.07609374821186066f, -0.07328125089406967f, -0.07046874612569809f, -0.0676562562584877f, -0.06484375149011612f, -0.062031250447034836f,
        -0.05921875312924385f, -0.05640624836087227f, -0.053593751043081284f, -0.05078125f, -0.047968748956918716f, -0.04515625163912773f,
        -0.04234374687075615f, -0.039531249552965164f, -0.03671875223517418f, -0.033906251192092896f, -0.031093750149011612f, -0.028281250968575478f,
        -0.025468749925494194f, -0.02265625074505806f, -0.019843751564621925f, -0.017031250521540642f, -0.014218750409781933f, -0.011406250298023224f,
        -0.009718749672174454f, -0.009156249463558197f, -0.008593750186264515f, -0.008031249977648258f, -0.0074687497690320015f, -0.006906250026077032f,
        -0.006343749817460775f, -0.005781250074505806f, -0.0052187503315508366f, -0.0046562496572732925f, -0.004093749914318323f, -0.0035312497057020664f,
        -0.002968749962747097f, -0.002406249986961484f, -0.001843750011175871f, -0.001281249918974936f, -0.0009437500848434865f, -0.0008312499849125743f,
        -0.0007187500596046448f, -0.0006062500760890543f, -0.000493750034365803f, -0.0003812500217463821f, -0.0002687500382307917f, -0.00015625001105945557f,
        -8.874999912222847e-05f, -6.625000241911039e-05f, -4.374999844003469e-05f, -2.1249998098937795e-05f, -7.749999895168003e-06f, -3.250000190746505e-06f,
        -5.500000384017767e-07f, 0.0f, 5.500000384017767e-07f, 3.250000190746505e-06f, 7.749999895168003e-06f, 2.1249998098937795e-05f,
        4.374999844003469e-05f, 6.625000241911039e-05f, 8.874999912222847e-05f, 0.00015625001105945557f, 0.0002687500382307917f, 0.0003812500217463821f,
        0.000493750034365803f, 0.0006062500760890543f, 0.0007187500596046448f, 0.0008312499849125743f, 0.0009437500848434865f, 0.001281249918974936f,
        0.001843750011175871f, 0.002406249986961484f, 0.002968749962747097f, 0.0035312497057020664f, 0.004093749914318323f, 0.0046562496572732925f,
        0.0052187503315508366f, 0.005781250074505806f, 0.006343749817460775f, 0.006906250026077032f, 0.0074687497690320015f, 0.008031249977648258f,
        0.008593750186264515f, 0.009156249463558197f, 0.009718749672174454f, 0.011406250298023224f, 0.014218750409781933f, 0.017031250521540642f,
        0.019843751564621925f, 0.02265625074505806f, 0.025468749925494194f, 0.028281250968575478f, 0.031093750149011612f, 0.033906251192092896f,
        0.03671875223517418f, 0.039531249552965164f, 0.04234374687075615f, 0.04515625163912773f, 0.047968748956918716f, 0.05078125f,
        0.053593751043081284f, 0.05640624836087227f, 0.05921875312924385f, 0.062031250447034836f, 0.06484375149011612f, 0.0676562562584877f,
        0.07046874612569809f, 0.07328125089406967f, 0.07609374821186066f, 0.07890625298023224f, 0.08171875774860382f, 0.08453124761581421f,
        0.08734375238418579f, 0.09015624970197678f, 0.09296875447034836f, 0.09578125923871994f, 0.09859374910593033f, 0.10703125596046448f,
        0.12109375f, 0.13515624403953552f, 0.14921875298023224f, 0.16328124701976776f, 0.17734375596046448f, 0.19140625f,
        0.20546874403953552f, 0.21953125298023224f, 0.23359374701976776f, 0.24765624105930328f, 0.26171875f, 0.2757812738418579f,
        0.28984373807907104f, 0.30390626192092896f, 0.3179687261581421f, 0.33203125f, 0.3460937440395355f, 0.36015623807907104f,
        0.37421876192092896f, 0.3882812261581421f, 0.40234375f, 0.4164062440395355f, 0.43046873807907104f, 0.44453126192092896f,
        0.4585937261581421f, 0.47265625f, 0.48671871423721313f, 0.500781238079071f, 0.5148437023162842f, 0.5289062261581421f,
        0.54296875f, 0.5570312738418579f, 0.5710937976837158f, 0.585156261920929f, 0.5992187261581421f, 0.61328125f,
        0.6273437738418579f, 0.6414062976837158f, 0.655468761920929f, 0.6695312261581421f, 0.68359375f, 0.6976562738418579f,
        0.7117187976837158f, 0.725781261920929f, 0.7398437261581421f, 0.75390625f, 0.7679687738418579f, 0.782031238079071f,
        0.796093761920929f, 0.8101562261581421f, 0.82421875f, 0.8382812738418579f, 0.852343738079071f, 0.866406261920929f,
        0.8804687261581421f, 0.89453125f, 0.9085937738418579f, 0.922656238079071f, 0.936718761920929f, 0.9507812261581421f,
        0.96484375f, 0.9789062738418579f, 0.992968738079071f, 1.0f,
    ];

    // ---- scalar quantizers (device and host) ----

    // dQuantizeNF4: decision tree on the code midpoints (fp32 literals from bnb), strict >; NaN -> 0.
    internal static int QuantizeNf4(float x)
    {
        if (x > 0.03979014977812767f)
            if (x > 0.3893125355243683f)
                if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
                else return x > 0.5016634166240692f ? 13 : 12;
            else if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
            else return x > 0.1202552504837513f ? 9 : 8;
        else if (x > -0.33967943489551544f)
            if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
            else return x > -0.23460740596055984f ? 5 : 4;
        else if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
        else return x > -0.8480964004993439f ? 1 : 0;
    }

    // dQuantizeFP4: sign bit for x < 0, magnitude thresholds on |x| (1 sign, 2 exponent, 1 mantissa bit, /12); NaN -> 0.
    internal static int QuantizeFp4(float x)
    {
        int sign = x < 0f ? 8 : 0;
        float a = MathF.Abs(x);
        int bits;
        if (a > 0.29166667f)
            if (a > 0.583333f) bits = a > 0.8333333f ? 0b011 : 0b010;
            else bits = a > 0.4166667f ? 0b101 : 0b100;
        else if (a > 0.0859375f) bits = a > 0.20833333f ? 0b111 : 0b110;
        else bits = a > 0.00260417f ? 0b001 : 0b000;
        return bits + sign;
    }

    internal static int Quantize4(int type, float x) => type == 0 ? QuantizeNf4(x) : QuantizeFp4(x);

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

    static float MulRn(float a, float b)
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

    public static long Blocks(long n, int blocksize) => (n + blocksize - 1) / blocksize;

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
        var kernel = k.Get("nf4.quantize",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, long, int, int, ArrayView<byte>, FloatView>(QuantizeKernel));
        kernel((int)blocks, x, n, blocksize, (int)type, packed, absmax);
    }

    // absmax[m] -> offset[1] (mean), qabsmax[m], absmax2[Blocks(m, 256)]; code8 = DynamicMap() (256)
    public static void DoubleQuantize(KernelRegistry k, FloatView absmax, FloatView code8, int m, ArrayView<byte> qabsmax,
        FloatView absmax2, FloatView offset)
    {
        Launch.Need(absmax, m, nameof(absmax)); Launch.Need(offset, 1, nameof(offset));
        if (m == 0) return;
        var mean = k.Get("nf4.mean", a => a.LoadStreamKernel<FloatView, int, FloatView>(MeanKernel));
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
        var kernel = k.Get("nf4.quantize8",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, FloatView, long, int, FloatView, ArrayView<byte>, FloatView>(
                QuantizeBlockwise8Kernel));
        kernel((int)blocks, x, offset, n, blocksize, code, q, absmax);
    }

    // qabsmax[m], absmax2[Blocks(m, 256)], offset[1], code8[256] -> absmax[m]
    public static void DequantizeAbsmax(KernelRegistry k, ArrayView<byte> qabsmax, FloatView absmax2, FloatView offset, FloatView code8,
        int m, FloatView absmax)
    {
        Launch.Need(qabsmax, m, nameof(qabsmax)); Launch.Need(absmax2, Blocks(m, NestedBlockSize), nameof(absmax2));
        Launch.Need(offset, 1, nameof(offset)); Launch.Need(code8, 256, nameof(code8)); Launch.Need(absmax, m, nameof(absmax));
        if (m == 0) return;
        var scale = k.Get("nf4.dequantize.absmax.scale",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<byte>, FloatView, FloatView, int, FloatView>(DequantizeAbsmaxScaleKernel));
        scale(m, qabsmax, absmax2, code8, NestedBlockSize, absmax);
        var add = k.Get("nf4.dequantize.absmax.offset",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, FloatView>(DequantizeAbsmaxOffsetKernel));
        add(m, offset, absmax);
    }

    // packed[(n+1)/2], absmax[Blocks(n, blocksize)], code4[16] -> y[n] fp32
    public static void Dequantize(KernelRegistry k, ArrayView<byte> packed, FloatView absmax, FloatView code4, long n, int blocksize, FloatView y)
    {
        CheckDequantize(packed, absmax, code4, n, blocksize);
        Launch.Need(y, n, nameof(y));
        if (n == 0) return;
        var kernel = k.Get("nf4.dequantize",
            a => a.LoadStreamKernel<ArrayView<byte>, FloatView, FloatView, long, int, FloatView>(DequantizeKernel));
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
        var kernel = k.Get("nf4.dequantize.half",
            a => a.LoadStreamKernel<ArrayView<byte>, FloatView, FloatView, long, int, int, ArrayView<ushort>>(DequantizeHalfKernel));
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
        var kernel = k.Get("nf4.dequantize.half8",
            a => a.LoadStreamKernel<ArrayView<uint>, FloatView, FloatView, long, int, int, ArrayView<ILGPU.Util.Int4>>(DequantizeHalf8Kernel));
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
        var kernel = k.Get("nf4.dequantize.half8.nested",
            a => a.LoadStreamKernel<ArrayView<uint>, ArrayView<byte>, FloatView, FloatView, FloatView, FloatView, long, int, int,
                ArrayView<ILGPU.Util.Int4>>(DequantizeHalf8NestedKernel));
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

    // ---- CPU reference: the spec (n = x.Length or y.Length) ----

    public static void QuantizeCpu(ReadOnlySpan<float> x, int blocksize, QuantType type, Span<byte> packed, Span<float> absmax)
    {
        for (int b = 0; b * blocksize < x.Length; b++)
        {
            var blk = x.Slice(b * blocksize, Math.Min(blocksize, x.Length - b * blocksize));
            float amax = 0f;
            foreach (var v in blk)
                if (MathF.Abs(v) > amax) amax = MathF.Abs(v);
            absmax[b] = amax;
            float r = 1f / amax;
            for (int j = 0; j < blk.Length; j += 2)
            {
                int hi = Quantize4((int)type, blk[j] * r);
                int lo = Quantize4((int)type, j + 1 < blk.Length ? blk[j + 1] * r : 0f * r);
                packed[(b * blocksize + j) / 2] = (byte)((hi << 4) | lo);
            }
        }
    }

    // offset = mean(absmax) (double sum, one rounding), then QuantizeBlockwise8Cpu(absmax - offset, blocks of 256)
    public static float DoubleQuantizeCpu(ReadOnlySpan<float> absmax, ReadOnlySpan<float> code8, Span<byte> qabsmax, Span<float> absmax2)
    {
        double sum = 0;
        foreach (var a in absmax) sum += a;
        float offset = absmax.Length == 0 ? 0f : (float)(sum / absmax.Length);
        QuantizeBlockwise8Cpu(absmax, offset, code8, NestedBlockSize, qabsmax, absmax2);
        return offset;
    }

    public static void QuantizeBlockwise8Cpu(ReadOnlySpan<float> x, float offset, ReadOnlySpan<float> code, int blocksize,
        Span<byte> q, Span<float> absmax)
    {
        for (int c = 0; c * blocksize < x.Length; c++)
        {
            int start = c * blocksize, end = Math.Min(x.Length, start + blocksize);
            float amax = 0f;
            for (int i = start; i < end; i++)
                if (MathF.Abs(x[i] - offset) > amax) amax = MathF.Abs(x[i] - offset);
            absmax[c] = amax;
            float r = 1f / amax;
            for (int i = start; i < end; i++) q[i] = NearestCode8Cpu(code, (x[i] - offset) * r);
        }
    }

    // dQuantize<0> on the host (same search as Quantize8)
    public static byte NearestCode8Cpu(ReadOnlySpan<float> code, float x)
    {
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = -1f, upper = 1f;
        for (int i = 64; i > 0; i >>= 1)
        {
            if (x > code[pivot]) (lowerPivot, lower, pivot) = (pivot, code[pivot], pivot + i);
            else (upperPivot, upper, pivot) = (pivot, code[pivot], pivot - i);
        }
        float val = code[pivot];
        if (upperPivot == 255) upper = code[255];
        if (lowerPivot == 0) lower = code[0];
        if (x > val) return (byte)(x > (upper + val) * 0.5f ? upperPivot : pivot);
        return (byte)(x < (lower + val) * 0.5f ? lowerPivot : pivot);
    }

    public static void DequantizeAbsmaxCpu(ReadOnlySpan<byte> qabsmax, ReadOnlySpan<float> absmax2, float offset, ReadOnlySpan<float> code8,
        Span<float> absmax)
    {
        for (int b = 0; b < qabsmax.Length; b++)
        {
            float scaled = code8[qabsmax[b]] * absmax2[b / NestedBlockSize];
            absmax[b] = scaled + offset;
        }
    }

    public static void DequantizeCpu(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, ReadOnlySpan<float> code4, int blocksize, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++)
        {
            int v = packed[i >> 1];
            y[i] = code4[(i & 1) == 0 ? v >> 4 : v & 15] * absmax[i / blocksize];
        }
    }

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
