// bitsandbytes' 4-bit blockwise codec (NF4 and FP4) with double quantization of the absmax, on the host (formats.md §5):
// the code tables, the scalar quantizers (also called by the device kernels in Kernels/Nf4.cs) and the CPU reference of
// every step, byte for byte as bitsandbytes' CUDA kernels. The format and its rounding rules are described in Nf4.cs.
namespace IlgpuTune.Numerics;

public enum QuantType { Nf4 = 0, Fp4 = 1 }

public static class Nf4Codec
{
    public const int BlockSize = 64;
    public const int NestedBlockSize = 256;

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
    public static int QuantizeNf4(float x)
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
    public static int QuantizeFp4(float x)
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

    public static int Quantize4(int type, float x) => type == 0 ? QuantizeNf4(x) : QuantizeFp4(x);

    public static long Blocks(long n, int blocksize) => (n + blocksize - 1) / blocksize;


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
}
