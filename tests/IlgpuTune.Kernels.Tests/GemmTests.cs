using ILGPU;
using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// The GEMM's backward is the same product in other layouts (NT -> NN, TN), whose math MatMulTests checks against
// finite differences; here every layout is checked against the CPU reference on inputs rounded to 16 bits. On the CPU
// accelerator the inline-PTX sites run their C# emulation, so these tests cover tiling, swizzles and fragment layouts.
[Collection(IlgpuCpuCollection.Name)]
public class GemmTests(IlgpuCpuFixture gpu)
{
    // Random 16-bit inputs and their exact values.
    static (ushort[] Bits, double[] Values) Half16(HalfType type, int seed, long n)
    {
        var f = Rand.Floats(seed, (int)n);
        var bits = new ushort[n];
        var back = new float[n];
        if (type == HalfType.BFloat16) { Cast.ToBf16Cpu(f, bits); Cast.FromBf16Cpu(bits, back); }
        else { Cast.ToF16Cpu(f, bits); Cast.FromF16Cpu(bits, back); }
        return (bits, Array.ConvertAll(back, x => (double)x));
    }

    static float[] Decode(HalfType type, ushort[] bits)
    {
        var y = new float[bits.Length];
        if (type == HalfType.BFloat16) Cast.FromBf16Cpu(bits, y); else Cast.FromF16Cpu(bits, y);
        return y;
    }

    internal sealed record Case(GemmLayout Layout, HalfType Type, int Batch, int M, int N, int K, bool Accumulate, bool Bias,
        int OutMode, int Splits, Gemm.TileConfig Tile, int Pad, int Seed)
    {
        public override string ToString() =>
            $"{Layout} {Type} b{Batch} {M}x{N}x{K} acc={Accumulate} bias={Bias} out={OutMode} splits={Splits} {Tile} pad={Pad} seed={Seed}";
    }

    void Check(Case t)
    {
        int m = t.M, n = t.N, kDim = t.K;
        long sA = (long)m * kDim + t.Pad, sB = (long)kDim * n + t.Pad, sC = (long)m * n + t.Pad;
        var (aBits, aVal) = Half16(t.Type, t.Seed, sA * t.Batch);
        var (bBits, bVal) = Half16(t.Type, t.Seed + 1, sB * t.Batch);
        var bias = t.Bias ? Rand.Floats(t.Seed + 2, n) : [];
        var outType = t.OutMode == 2 ? HalfType.Float16 : HalfType.BFloat16;
        var (c0Bits, c0Val) = Half16(outType, t.Seed + 3, sC * t.Batch); // prior C: exact in every output format
        var c0 = Array.ConvertAll(c0Val, x => (float)x);

        var want = (double[])c0Val.Clone();
        Gemm.BatchedCpu<double>(t.Layout, aVal, bVal, Array.ConvertAll(bias, x => (double)x), t.Batch, m, n, kDim, sA, sB, sC,
            0.75, t.Accumulate, want);

        using var ga = gpu.Accelerator.Allocate1D(aBits);
        using var gb = gpu.Accelerator.Allocate1D(bBits);
        using var gBias = gpu.Upload(t.Bias ? bias : [0f]);
        var biasView = t.Bias ? gBias.View : default;
        float[] got;
        if (t.OutMode == 0)
        {
            using var gc = gpu.Upload(c0);
            Gemm.LaunchGemm(gpu.Kernels, t.Layout, t.Type, ga.View, gb.View, biasView, t.Batch, m, n, kDim, sA, sB, sC, 0.75f,
                t.Accumulate, 0, gc.View, default, t.Tile, t.Splits);
            gpu.Accelerator.Synchronize();
            got = gc.GetAsArray1D();
        }
        else
        {
            using var gc = gpu.Accelerator.Allocate1D(c0Bits);
            Gemm.LaunchGemm(gpu.Kernels, t.Layout, t.Type, ga.View, gb.View, biasView, t.Batch, m, n, kDim, sA, sB, sC, 0.75f,
                t.Accumulate, t.OutMode, default, gc.View, t.Tile, t.Splits);
            gpu.Accelerator.Synchronize();
            got = Decode(outType, gc.GetAsArray1D());
        }
        // Padding between batch items is never written.
        for (int bi = 0; bi < t.Batch; bi++)
            for (long i = bi * sC + (long)m * n; i < (bi + 1) * sC; i++)
                Assert.True(got[i] == c0[i], $"{t}: padding c[{i}] was written");
        // fp32 output: exact products, fp32 sums in another order. 16-bit output: one rounding (2^-8 or 2^-11 relative).
        double rtol = t.OutMode switch { 0 => 1e-5, 1 => 1.0 / 256, _ => 1.0 / 2048 };
        Close.Assert(t.ToString(), want, got, 1e-5 * Math.Sqrt(kDim + 1) + rtol * 1e-2, rtol);
    }

    [Theory]
    [InlineData(GemmLayout.NT, HalfType.BFloat16, 1, 1, 1)]
    [InlineData(GemmLayout.NT, HalfType.Float16, 64, 64, 64)]   // exactly one tile, two K stages
    [InlineData(GemmLayout.NT, HalfType.BFloat16, 70, 9, 37)]   // M tail, skinny N, K not a multiple of 8
    [InlineData(GemmLayout.NN, HalfType.BFloat16, 5, 66, 40)]   // N tail across two tiles
    [InlineData(GemmLayout.NN, HalfType.Float16, 33, 8, 130)]   // K tail after 4 stages: the ring wraps
    [InlineData(GemmLayout.TN, HalfType.BFloat16, 72, 17, 24)]  // M-major A: partial 16-byte chunks in M
    [InlineData(GemmLayout.TN, HalfType.Float16, 16, 64, 96)]
    [InlineData(GemmLayout.NT, HalfType.BFloat16, 70, 68, 72)]  // tail tiles in M and N slide back: fast path, masked stores
    [InlineData(GemmLayout.NN, HalfType.Float16, 129, 66, 64)]
    [InlineData(GemmLayout.TN, HalfType.BFloat16, 68, 100, 40)]
    public void Kernel_MatchesCpuReference(GemmLayout layout, HalfType type, int m, int n, int kDim)
    {
        foreach (bool accumulate in new[] { false, true })
            Check(new Case(layout, type, 1, m, n, kDim, accumulate, accumulate, 0, 1, Gemm.TileConfig.T1x1, 0, m * 7 + n));
    }

    [Theory]
    [InlineData(GemmLayout.NT, 1)]
    [InlineData(GemmLayout.NN, 2)]
    [InlineData(GemmLayout.TN, 1)]
    public void Kernel_SixteenBitOutput(GemmLayout layout, int outMode) =>
        Check(new Case(layout, HalfType.BFloat16, 1, 19, 24, 40, true, true, outMode, 1, Gemm.TileConfig.T1x1, 0, 5));

    // Four warps in a 2x2 group (128 threads): warp placement inside the group tile and the wider M/N-major rows. The
    // first group tile is in range (straight-line cp.async for the two whole K tiles, 4-wide stores), the others and
    // the K tail take the guarded paths.
    [Theory]
    [InlineData(GemmLayout.NT, 0)]
    [InlineData(GemmLayout.NN, 1)]
    [InlineData(GemmLayout.TN, 2)]
    public void Kernel_TwoByTwoWarps(GemmLayout layout, int outMode) =>
        Check(new Case(layout, HalfType.BFloat16, 1, 136, 132, 136, true, true, outMode, 1, Gemm.TileConfig.T2x2, 0, 11));

    // Hopper wgmma tiles through their CPU emulation (descriptors decoded as the hardware reads them, the 128-byte
    // swizzle on addresses, the m64nNk16 accumulator fragment): one warpgroup (128 threads), a 64x64 or 64x128 group
    // tile. The first group tile is in range (straight-line cp.async for the 5 whole K tiles: the 4-slot ring wraps),
    // the others and the K tail of 8 take the guarded loads; W1N128's N-major B spans two 64-wide panels.
    [Theory]
    [InlineData(GemmLayout.NT, "W1N64", 0)]
    [InlineData(GemmLayout.NN, "W1N64", 1)]
    [InlineData(GemmLayout.TN, "W1N64", 2)]
    [InlineData(GemmLayout.NT, "W1N128", 1)]
    [InlineData(GemmLayout.NN, "W1N128", 0)]
    [InlineData(GemmLayout.TN, "W1N128", 0)]
    public void Kernel_Wgmma(GemmLayout layout, string tile, int outMode) =>
        Check(new Case(layout, HalfType.BFloat16, 1, 72, 136, 328, true, true, outMode, 1, Enum.Parse<Gemm.TileConfig>(tile), 0, 13));

    // Two warpgroups (each its own 64 rows of the 128x128 tile), f16 inputs; and wgmma with split-K and a batch.
    [Theory]
    [InlineData(GemmLayout.NT)]
    [InlineData(GemmLayout.NN)]
    [InlineData(GemmLayout.TN)]
    public void Kernel_WgmmaTwoWarpgroups(GemmLayout layout) =>
        Check(new Case(layout, HalfType.Float16, 1, 136, 130, 136, true, false, 2, 1, Gemm.TileConfig.W2N128, 0, 17));

    // Random layouts, formats, epilogues, splits and tails through the one-warpgroup wgmma tiles (128 threads a group).
    [Property(MaxTest = 6)]
    public Property Kernel_WgmmaRandomShapes()
    {
        var cases = from layout in Gen.Elements(GemmLayout.NT, GemmLayout.NN, GemmLayout.TN)
                    from type in Gen.Elements(HalfType.BFloat16, HalfType.Float16)
                    from tile in Gen.Elements(Gemm.TileConfig.W1N64, Gemm.TileConfig.W1N128)
                    from m in Gen.Choose(1, 80)
                    from n in Gen.Choose(1, 140)
                    from kDim in Gen.Choose(1, 300)
                    from accumulate in Gen.Elements(false, true)
                    from bias in Gen.Elements(false, true)
                    from outMode in Gen.Choose(0, 2)
                    from splits in Gen.Choose(1, 2)
                    from pad in Gen.Choose(0, 9)
                    from seed in Gen.Choose(0, 10000)
                    select new Case(layout, type, 1, m, n, kDim, accumulate, bias, outMode, splits, tile, pad, seed);
        return Prop.ForAll(cases.ToArbitrary(), c => Check(c));
    }

    [Fact]
    public void Kernel_WgmmaBatchedSplitK() =>
        Check(new Case(GemmLayout.NN, HalfType.BFloat16, 2, 20, 70, 200, true, true, 0, 2, Gemm.TileConfig.W1N64, 8, 23));

    [Fact]
    public void Kernel_BatchedSplitK()
    {
        Check(new Case(GemmLayout.NT, HalfType.BFloat16, 3, 20, 12, 100, true, true, 0, 3, Gemm.TileConfig.T1x1, 8, 21));
        Check(new Case(GemmLayout.TN, HalfType.Float16, 2, 9, 16, 70, false, false, 1, 2, Gemm.TileConfig.T1x1, 5, 22));
    }

    // Random layouts, formats, epilogues, splits and tail-heavy shapes: a few groups of 32 threads each.
    [Property(MaxTest = 12)]
    public Property Kernel_RandomShapes()
    {
        var cases = from layout in Gen.Elements(GemmLayout.NT, GemmLayout.NN, GemmLayout.TN)
                    from type in Gen.Elements(HalfType.BFloat16, HalfType.Float16)
                    from batch in Gen.Choose(1, 2)
                    from m in Gen.Choose(1, 80)
                    from n in Gen.Choose(1, 80)
                    from kDim in Gen.Choose(1, 100)
                    from accumulate in Gen.Elements(false, true)
                    from bias in Gen.Elements(false, true)
                    from outMode in Gen.Choose(0, 2)
                    from splits in Gen.Choose(1, 3)
                    from pad in Gen.Choose(0, 9)
                    from seed in Gen.Choose(0, 10000)
                    select new Case(layout, type, batch, m, n, kDim, accumulate, bias, outMode, splits, Gemm.TileConfig.T1x1, pad, seed);
        return Prop.ForAll(cases.ToArbitrary(), c => Check(c));
    }

    [Fact]
    public void PublicLaunchers_MatchCpuReference()
    {
        const int m = 7, n = 10, kDim = 20;
        var (aBits, aVal) = Half16(HalfType.BFloat16, 31, m * kDim);
        var (bBits, bVal) = Half16(HalfType.BFloat16, 32, kDim * n);
        using var ga = gpu.Accelerator.Allocate1D(aBits);
        using var gb = gpu.Accelerator.Allocate1D(bBits);
        foreach (var layout in new[] { GemmLayout.NT, GemmLayout.NN, GemmLayout.TN })
        {
            var want = new double[m * n];
            Gemm.BatchedCpu<double>(layout, aVal, bVal, [], 1, m, n, kDim, 0, 0, 0, 1.0, false, want);
            using var gc = gpu.Zeros(m * n);
            switch (layout)
            {
                case GemmLayout.NT: Gemm.NT(gpu.Kernels, HalfType.BFloat16, ga.View, gb.View, default, m, n, kDim, 1f, false, gc.View); break;
                case GemmLayout.NN: Gemm.NN(gpu.Kernels, HalfType.BFloat16, ga.View, gb.View, default, m, n, kDim, 1f, false, gc.View); break;
                default: Gemm.TN(gpu.Kernels, HalfType.BFloat16, ga.View, gb.View, default, m, n, kDim, 1f, false, gc.View); break;
            }
            using var gh = gpu.Accelerator.Allocate1D<ushort>(m * n);
            Gemm.Run(gpu.Kernels, layout, HalfType.BFloat16, ga.View, gb.View, default, m, n, kDim, 1f, false, HalfType.Float16, gh.View);
            gpu.Accelerator.Synchronize();
            Close.Assert(layout.ToString(), want, gc.GetAsArray1D(), 1e-4, 1e-5);
            Close.Assert(layout + " f16", want, Decode(HalfType.Float16, gh.GetAsArray1D()), 1e-4, 1.0 / 2048);
        }
    }

    [Fact]
    public void Launcher_RejectsShortViews()
    {
        using var small = gpu.Accelerator.Allocate1D<ushort>(5);
        using var c = gpu.Zeros(4);
        Assert.Throws<ArgumentException>(() => Gemm.NT(gpu.Kernels, HalfType.BFloat16, small.View, small.View, default, 2, 2, 3, 1f, false, c.View));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Batched(gpu.Kernels, GemmLayout.NN, HalfType.BFloat16, small.View,
            small.View, default, 2, 1, 1, 1, 0, 1, 1, 1f, false, c.View));
    }

    [Fact]
    public void CpuReference_AddsBiasAndPriorPerBatch()
    {
        // 2 batches of 1x2 = [1x1]·[1x2]: c = alpha*a*b + bias + prior
        double[] a = [2, 3], b = [1, 10, 100, 1000], bias = [0.5, -0.5], c = [1, 1, 0, 2, 2, 0];
        Gemm.BatchedCpu<double>(GemmLayout.NN, a, b, bias, 2, 1, 2, 1, 1, 2, 3, 2.0, true, c);
        Assert.Equal(new double[] { 5.5, 40.5, 0, 602.5, 6001.5, 0 }, c);
    }
}
