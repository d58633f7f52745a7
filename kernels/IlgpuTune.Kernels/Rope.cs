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
// Kernels: one thread per 4 consecutive pairs with 16-byte loads when D/2 % 4 == 0 and every view is 16-byte aligned,
// else one thread per pair. Forward and backward share them: the backward is the rotation with sin negated.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Util;

namespace IlgpuTune.Kernels;

public static class Rope
{
    // ---- host helpers ----

    /// <summary>
    /// inv_freq[D/2] in fp32 as HF's default rope computes it: 1.0 / (base ** (arange(0, D, 2).float() / D)) with an fp32
    /// exponent, fp32 pow and fp32 reciprocal. rope_scaling variants (Model's RopeScaling) start from this table.
    /// </summary>
    public static float[] InverseFrequencies(int headDim, double ropeTheta)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be positive and even");
        var inv = new float[headDim / 2];
        for (int j = 0; j < inv.Length; j++)
            inv[j] = 1f / MathF.Pow((float)ropeTheta, (float)(2 * j) / headDim);
        return inv;
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

    // ---- device kernels: rotation by +angle (sign 1) or -angle (sign -1, the backward) ----

    // One thread per rotated pair (token, head, j < half). 32-bit index math: 64-bit division is emulated on the GPU and
    // dominated this kernel; x has 2 * pairs < 2^32 elements, so the offsets are taken as unsigned 32-bit.
    static void RotateKernel(Index1D p, FloatView x, FloatView cos, FloatView sin, int heads, int half, float sign, FloatView y)
    {
        int j = p % half;
        int tokenHead = p / half;
        int cs = tokenHead / heads * half + j;
        long lo = (long)((uint)tokenHead * 2 * (uint)half + (uint)j), hi = lo + half;
        float c = cos[cs], s = sign * sin[cs], a = x[lo], b = x[hi];
        y[lo] = a * c - b * s;
        y[hi] = b * c + a * s;
    }

    // One thread per 4 consecutive pairs: x, y, cos, sin as Float4 (half4 = half / 4); x has < 2^30 Float4.
    static void RotateVecKernel(Index1D q, ArrayView<Float4> x, ArrayView<Float4> cos, ArrayView<Float4> sin, int heads, int half4, float sign,
        ArrayView<Float4> y)
    {
        int j = q % half4;
        int tokenHead = q / half4;
        int cs = tokenHead / heads * half4 + j;
        int lo = tokenHead * 2 * half4 + j, hi = lo + half4;
        Float4 c = cos[cs], s = sin[cs] * sign, a = x[lo], b = x[hi];
        y[lo] = a * c - b * s;
        y[hi] = b * c + a * s;
    }

    // ---- launchers ----

    // x, y[tokens, heads, headDim]; cos, sin[tokens, headDim/2]
    public static void Forward(KernelRegistry k, FloatView x, FloatView cos, FloatView sin, int tokens, int heads, int headDim, FloatView y) =>
        Rotate(k, x, cos, sin, tokens, heads, headDim, 1f, y);

    // dY, dX[tokens, heads, headDim]; cos, sin[tokens, headDim/2]; dX is overwritten
    public static void Backward(KernelRegistry k, FloatView dY, FloatView cos, FloatView sin, int tokens, int heads, int headDim, FloatView dX) =>
        Rotate(k, dY, cos, sin, tokens, heads, headDim, -1f, dX);

    static void Rotate(KernelRegistry k, FloatView x, FloatView cos, FloatView sin, int tokens, int heads, int headDim, float sign, FloatView y)
    {
        int pairs = Pairs(tokens, heads, headDim);
        if (pairs == 0) return;
        int half = headDim / 2;
        if (half % 4 == 0 && Launch.Aligned16(x, cos, sin, y))
        {
            var vec = k.Get<Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, int, int, float, ArrayView<Float4>>>(
                new("rope.rotate.v4", RotateVecKernel));
            vec(pairs / 4, x.Cast<Float4>(), cos.Cast<Float4>(), sin.Cast<Float4>(), heads, half / 4, sign, y.Cast<Float4>());
            return;
        }
        var kernel = k.Get<Action<Index1D, FloatView, FloatView, FloatView, int, int, float, FloatView>>(new("rope.rotate", RotateKernel));
        kernel(pairs, x, cos, sin, heads, half, sign, y);
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
