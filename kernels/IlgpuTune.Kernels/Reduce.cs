// Warp and group reductions shared by the row kernels (RMSNorm, softmax, cross-entropy).
// Group reductions take a 32-float shared scratch from the caller and return the result to every thread.
using ILGPU;

namespace IlgpuTune.Kernels;

public static class Reduce
{
    public const int ScratchSize = 32;

    public static float WarpSum(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset /= 2)
            v += Warp.ShuffleXor(v, offset);
        return v;
    }

    public static float WarpMax(float v)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset /= 2)
            v = MathF.Max(v, Warp.ShuffleXor(v, offset));
        return v;
    }

    public static float GroupSum(float v, ArrayView<float> scratch)
    {
        v = WarpSum(v);
        if (Warp.IsFirstLane) scratch[Warp.WarpIdx] = v;
        Group.Barrier();
        float total = 0f;
        int warps = Group.DimX / Warp.WarpSize;
        for (int i = 0; i < warps; i++) total += scratch[i];
        Group.Barrier();
        return total;
    }

    public static float GroupMax(float v, ArrayView<float> scratch)
    {
        v = WarpMax(v);
        if (Warp.IsFirstLane) scratch[Warp.WarpIdx] = v;
        Group.Barrier();
        float best = float.NegativeInfinity;
        int warps = Group.DimX / Warp.WarpSize;
        for (int i = 0; i < warps; i++) best = MathF.Max(best, scratch[i]);
        Group.Barrier();
        return best;
    }
}
