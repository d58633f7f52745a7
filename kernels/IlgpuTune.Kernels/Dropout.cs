// Inverted dropout with a counter-based mask: element i of a call with seed s is kept iff the top 24 bits of
// splitmix64(s + i * golden) are >= round(p * 2^24), so the mask is a pure function of (seed, i): drawn on the device, the
// same on every device, and recomputed in backward instead of stored.
//   Forward:  y[i]  = keep(i) ? x[i] * scale : 0,   scale = 1 / (1 - p)
//   Backward: dX[i] = keep(i) ? dY[i] * scale : 0   (the same map applied to dY with the same seed)
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public static class Dropout
{
    /// <summary>The 24-bit threshold of drop probability p (elements whose 24-bit draw is below it are dropped).</summary>
    public static uint Threshold(float p) => (uint)Math.Round((double)p * (1 << 24));

    /// <summary>The multiplier of kept elements, 1 / (1 - p) in fp32.</summary>
    public static float Scale(float p) => 1f / (1f - p);

    internal static bool Keep(ulong seed, long i, uint threshold)
    {
        ulong z = seed + (ulong)i * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (uint)(z >> 40) >= threshold;
    }

    // ---- device kernel: grid-stride over n ----

    static void ApplyKernel(FloatView x, long n, ulong seed, uint threshold, float scale, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = Keep(seed, i, threshold) ? x[i] * scale : 0f;
    }

    // ---- launchers ----

    // x[n] -> y[n] (y may be x)
    public static void Forward(KernelRegistry k, FloatView x, long n, float p, ulong seed, FloatView y) => Apply(k, x, n, p, seed, y);

    // dY[n] -> dX[n] (overwrite), the forward's seed and p
    public static void Backward(KernelRegistry k, FloatView dY, long n, float p, ulong seed, FloatView dX) => Apply(k, dY, n, p, seed, dX);

    static void Apply(KernelRegistry k, FloatView x, long n, float p, ulong seed, FloatView y)
    {
        CheckP(p);
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (n == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, long, ulong, uint, float, FloatView>>(new("dropout.apply", ApplyKernel));
        kernel(Launch.Flat(k, n), x, n, seed, Threshold(p), Scale(p), y);
    }

    static void CheckP(float p)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1)");
    }

    // ---- CPU reference: n = x.Length ----

    public static void ForwardCpu<T>(ReadOnlySpan<T> x, float p, ulong seed, Span<T> y) where T : IFloatingPointIeee754<T>
    {
        CheckP(p);
        uint threshold = Threshold(p);
        T scale = T.CreateChecked(Scale(p));
        for (int i = 0; i < x.Length; i++) y[i] = Keep(seed, i, threshold) ? x[i] * scale : T.Zero;
    }

    public static void BackwardCpu<T>(ReadOnlySpan<T> dY, float p, ulong seed, Span<T> dX) where T : IFloatingPointIeee754<T> =>
        ForwardCpu(dY, p, seed, dX);
}
