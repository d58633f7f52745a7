// Rotary position embedding, HF rotate_half convention: dimension i pairs with i + D/2 (NOT interleaved 2i, 2i+1).
//   x[tokens, heads, D] (tokens = batch*seq), cos/sin[tokens, D/2] -> y[tokens, heads, D]; with h = D/2, j < h:
//   y[j]   = x[j]*cos_j - x[j+h]*sin_j
//   y[j+h] = x[j+h]*cos_j + x[j]*sin_j
// HF builds emb = cat(freqs, freqs), so both halves of a pair share cos_j/sin_j; storing D/2 columns loses nothing.
// Backward is the transposed rotation (overwrites dX):
//   dX[j]   = dY[j]*cos_j + dY[j+h]*sin_j
//   dX[j+h] = dY[j+h]*cos_j - dY[j]*sin_j
// The host helpers reproduce HF's fp32 inv_freq (modeling_rope_utils.py) operation by operation, following torch CPU
// semantics (scalar operands cast to fp32, `a / t` computed as `t.reciprocal() * a`); results can differ from torch in
// the last ulp where torch's vectorized pow/cos round differently from MathF.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

/// <summary>HF rope_scaling: Type is "default", "linear", "dynamic" or "llama3" (the legacy `type`/`rope_type` key).</summary>
public sealed record RopeScaling(string Type, double Factor = 1, double LowFreqFactor = 1, double HighFreqFactor = 4,
    int OriginalMaxPositionEmbeddings = 8192)
{
    public static RopeScaling None { get; } = new("default");
}

public static class Rope
{
    // ---- host helpers ----

    /// <summary>
    /// inv_freq[D/2] in fp32 as HF computes it. For "dynamic" this is the unscaled table, which HF uses while
    /// max(position_ids)+1 <= max_position_embeddings; beyond that pass <see cref="DynamicNtkTheta"/> as the theta.
    /// </summary>
    public static float[] InverseFrequencies(int headDim, double ropeTheta, RopeScaling scaling)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be positive and even");
        // 1.0 / (base ** (arange(0, D, 2).float() / D)): fp32 exponent, fp32 pow, fp32 reciprocal.
        var inv = new float[headDim / 2];
        for (int j = 0; j < inv.Length; j++)
            inv[j] = 1f / MathF.Pow((float)ropeTheta, (float)(2 * j) / headDim);
        switch (scaling.Type)
        {
            case "default":
            case "dynamic":
                return inv;
            case "linear":
                for (int j = 0; j < inv.Length; j++) inv[j] /= (float)scaling.Factor;
                return inv;
            case "llama3":
                return Llama3(inv, scaling);
            default:
                throw new NotSupportedException($"rope_scaling type '{scaling.Type}' is not supported (default, linear, dynamic, llama3)");
        }
    }

    /// <summary>
    /// Dynamic NTK theta for sequences of <paramref name="seqLen"/> = max(position_ids)+1 positions:
    /// theta * (factor*L/max - (factor-1))^(D/(D-2)) when L > max, else theta unchanged. Computed in double like HF's Python.
    /// </summary>
    public static double DynamicNtkTheta(int headDim, double ropeTheta, double factor, int seqLen, int maxPositionEmbeddings)
    {
        if (seqLen <= maxPositionEmbeddings) return ropeTheta;
        return ropeTheta * Math.Pow(factor * seqLen / maxPositionEmbeddings - (factor - 1), (double)headDim / (headDim - 2));
    }

    // HF _compute_llama3_parameters in fp32: keep high frequencies, divide low ones by factor, blend the band between.
    static float[] Llama3(float[] inv, RopeScaling s)
    {
        float factor = (float)s.Factor, low = (float)s.LowFreqFactor, band = (float)(s.HighFreqFactor - s.LowFreqFactor);
        float lowWavelen = (float)(s.OriginalMaxPositionEmbeddings / s.LowFreqFactor);
        float highWavelen = (float)(s.OriginalMaxPositionEmbeddings / s.HighFreqFactor);
        var result = new float[inv.Length];
        for (int j = 0; j < inv.Length; j++)
        {
            float wavelen = 1f / inv[j] * (float)(2 * Math.PI);
            float f = wavelen > lowWavelen ? inv[j] / factor : inv[j];
            bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            if (medium)
            {
                float smooth = (1f / wavelen * s.OriginalMaxPositionEmbeddings - low) / band;
                f = (1f - smooth) * f / factor + smooth * f;
            }
            result[j] = f;
        }
        return result;
    }

    /// <summary>cos/sin[tokens, D/2] of freq = (float)position * inv_freq[j], all in fp32 as HF does with autocast off.</summary>
    public static void CosSinCpu(ReadOnlySpan<int> positionIds, ReadOnlySpan<float> invFreq, Span<float> cos, Span<float> sin)
    {
        int half = invFreq.Length;
        for (int t = 0; t < positionIds.Length; t++)
        {
            float pos = positionIds[t];
            for (int j = 0; j < half; j++)
            {
                float freq = pos * invFreq[j];
                cos[t * half + j] = MathF.Cos(freq);
                sin[t * half + j] = MathF.Sin(freq);
            }
        }
    }

    // ---- device kernels: one thread per rotated pair (token, head, j < D/2) ----

    static void ForwardKernel(Index1D p, FloatView x, FloatView cos, FloatView sin, int heads, int half, FloatView y)
    {
        // 32-bit index math: 64-bit division is emulated on the GPU and dominated this kernel.
        int j = p % half;
        int tokenHead = p / half;
        long cs = (long)(tokenHead / heads) * half + j;
        long lo = (long)tokenHead * 2 * half + j, hi = lo + half;
        float c = cos[cs], s = sin[cs], a = x[lo], b = x[hi];
        y[lo] = a * c - b * s;
        y[hi] = b * c + a * s;
    }

    static void BackwardKernel(Index1D p, FloatView dY, FloatView cos, FloatView sin, int heads, int half, FloatView dX)
    {
        int j = p % half;
        int tokenHead = p / half;
        long cs = (long)(tokenHead / heads) * half + j;
        long lo = (long)tokenHead * 2 * half + j, hi = lo + half;
        float c = cos[cs], s = sin[cs], a = dY[lo], b = dY[hi];
        dX[lo] = a * c + b * s;
        dX[hi] = b * c - a * s;
    }

    // ---- launchers ----

    // x, y[tokens, heads, headDim]; cos, sin[tokens, headDim/2]
    public static void Forward(KernelRegistry k, FloatView x, FloatView cos, FloatView sin, int tokens, int heads, int headDim, FloatView y)
    {
        int pairs = Pairs(tokens, heads, headDim);
        if (pairs == 0) return;
        var kernel = k.Get("rope.forward",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, FloatView, FloatView, int, int, FloatView>(ForwardKernel));
        kernel(pairs, x, cos, sin, heads, headDim / 2, y);
    }

    // dY, dX[tokens, heads, headDim]; cos, sin[tokens, headDim/2]; dX is overwritten
    public static void Backward(KernelRegistry k, FloatView dY, FloatView cos, FloatView sin, int tokens, int heads, int headDim, FloatView dX)
    {
        int pairs = Pairs(tokens, heads, headDim);
        if (pairs == 0) return;
        var kernel = k.Get("rope.backward",
            a => a.LoadAutoGroupedStreamKernel<Index1D, FloatView, FloatView, FloatView, int, int, FloatView>(BackwardKernel));
        kernel(pairs, dY, cos, sin, heads, headDim / 2, dX);
    }

    static int Pairs(int tokens, int heads, int headDim)
    {
        if (headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be even");
        return checked(tokens * heads * (headDim / 2));
    }

    // ---- CPU reference: the spec ----

    // x, y[tokens, heads, headDim]; cos, sin[tokens, headDim/2]
    public static void ForwardCpu<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> cos, ReadOnlySpan<T> sin, int tokens, int heads, int headDim, Span<T> y)
        where T : IFloatingPointIeee754<T> =>
        Rotate(x, cos, sin, tokens, heads, headDim, sign: T.One, y);

    // dY, dX[tokens, heads, headDim]; cos, sin[tokens, headDim/2]; dX is overwritten
    public static void BackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<T> cos, ReadOnlySpan<T> sin, int tokens, int heads, int headDim, Span<T> dX)
        where T : IFloatingPointIeee754<T> =>
        Rotate(dY, cos, sin, tokens, heads, headDim, sign: -T.One, dX);

    // Rotation by +angle (sign 1) or by -angle (sign -1, the transpose).
    static void Rotate<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> cos, ReadOnlySpan<T> sin, int tokens, int heads, int headDim, T sign, Span<T> y)
        where T : IFloatingPointIeee754<T>
    {
        _ = Pairs(tokens, heads, headDim); // rejects an odd headDim
        int half = headDim / 2;
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                int lo = (t * heads + h) * headDim;
                for (int j = 0; j < half; j++)
                {
                    T c = cos[t * half + j], s = sign * sin[t * half + j];
                    T a = x[lo + j], b = x[lo + j + half];
                    y[lo + j] = a * c - b * s;
                    y[lo + j + half] = b * c + a * s;
                }
            }
    }
}
