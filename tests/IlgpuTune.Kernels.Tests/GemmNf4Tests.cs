using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// The fused NF4 GEMM (B dequantized in the load stage) against dequantize-then-Gemm with the same tile and split: the
// shared-memory tiles hold the same bits and the accumulation order is the same, so the outputs must be equal to the bit;
// and against the CPU reference (the weight dequantized on the host, fp64 products). On the CPU accelerator the inline-PTX
// sites run their C# emulation: swizzles, the deferred store of mma.sync tiles, wgmma descriptors, tails and split-K.
[Collection(IlgpuCpuCollection.Name)]
public class GemmNf4Tests(IlgpuCpuFixture gpu)
{
    internal sealed record Case(GemmLayout Layout, HalfType Type, int M, int Rows, int Cols, int BlockSize, Gemm.TileConfig Tile,
        int Splits, int OutMode, bool Accumulate, bool Bias, int Seed)
    {
        public override string ToString() =>
            $"{Layout} {Type} m={M} W[{Rows}x{Cols}] bs={BlockSize} {Tile} splits={Splits} out={OutMode} acc={Accumulate} bias={Bias}";
    }

    static ushort[] ToHalf(HalfType type, float[] x)
    {
        var bits = new ushort[x.Length];
        if (type == HalfType.BFloat16) Cast.ToBf16Cpu(x, bits); else Cast.ToF16Cpu(x, bits);
        return bits;
    }

    static float[] FromHalf(HalfType type, ushort[] bits)
    {
        var y = new float[bits.Length];
        if (type == HalfType.BFloat16) Cast.FromBf16Cpu(bits, y); else Cast.FromF16Cpu(bits, y);
        return y;
    }

    void Check(Case t)
    {
        int n = t.Layout == GemmLayout.NT ? t.Rows : t.Cols, kDim = t.Layout == GemmLayout.NT ? t.Cols : t.Rows;
        long elements = (long)t.Rows * t.Cols, blocks = Nf4Codec.Blocks(elements, t.BlockSize);
        // The weight, quantized and double-quantized on the host (byte-identical to the kernels, Nf4Tests), and its 16-bit
        // dequantized copy: what the workspace path multiplies by.
        var w = Rand.Floats(t.Seed, (int)elements);
        var code4 = Nf4Codec.Code(QuantType.Nf4);
        var code8 = Nf4Codec.DynamicMap();
        var packed = new byte[(elements + 1) / 2];
        var absmax = new float[blocks];
        Nf4Codec.QuantizeCpu(w, t.BlockSize, QuantType.Nf4, packed, absmax);
        var qabsmax = new byte[blocks];
        var absmax2 = new float[Nf4Codec.Blocks(blocks, Nf4Codec.NestedBlockSize)];
        float offset = Nf4Codec.DoubleQuantizeCpu(absmax, code8, qabsmax, absmax2);
        var absmaxDq = new float[blocks];
        Nf4Codec.DequantizeAbsmaxCpu(qabsmax, absmax2, offset, code8, absmaxDq);
        var wh = new ushort[elements];
        if (t.Type == HalfType.BFloat16) Nf4.DequantizeBf16Cpu(packed, absmaxDq, code4, t.BlockSize, wh);
        else Nf4.DequantizeF16Cpu(packed, absmaxDq, code4, t.BlockSize, wh);

        var aBits = ToHalf(t.Type, Rand.Floats(t.Seed + 1, t.M * kDim));
        var bias = t.Bias ? Rand.Floats(t.Seed + 2, n) : [];
        var outType = t.OutMode == 2 ? HalfType.Float16 : HalfType.BFloat16;
        var c0 = FromHalf(outType, ToHalf(outType, Rand.Floats(t.Seed + 3, t.M * n))); // exact in every output format

        var acc = gpu.Accelerator;
        using var ga = acc.Allocate1D(aBits);
        using var gwh = acc.Allocate1D(wh);
        using var gPacked = acc.Allocate1D(packed);
        using var gq = acc.Allocate1D(qabsmax);
        using var gAbs2 = acc.Allocate1D(absmax2);
        using var gOff = gpu.Upload([offset]);
        using var gCode8 = gpu.Upload(code8);
        using var gCode4 = gpu.Upload(code4);
        using var gBias = gpu.Upload(t.Bias ? bias : [0f]);
        var biasView = t.Bias ? gBias.View : default;
        var op = new Nf4Operand(gPacked.View, gq.View, gAbs2.View, gOff.View, gCode8.View, gCode4.View, t.Rows, t.Cols, t.BlockSize);

        float[] Run(bool fused)
        {
            if (t.OutMode == 0)
            {
                using var gc = gpu.Upload(c0);
                if (fused) Gemm.LaunchNf4(gpu.Kernels, t.Layout, t.Type, ga.View, op, biasView, t.M, 0.75f, t.Accumulate, 0, gc.View, default, t.Tile, t.Splits);
                else Gemm.LaunchGemm(gpu.Kernels, t.Layout, t.Type, ga.View, gwh.View, biasView, 1, t.M, n, kDim, 0, 0, 0, 0.75f, t.Accumulate, 0,
                    gc.View, default, t.Tile, t.Splits);
                acc.Synchronize();
                return gc.GetAsArray1D();
            }
            using var gh = acc.Allocate1D(ToHalf(outType, c0));
            if (fused) Gemm.LaunchNf4(gpu.Kernels, t.Layout, t.Type, ga.View, op, biasView, t.M, 0.75f, t.Accumulate, t.OutMode, default, gh.View, t.Tile, t.Splits);
            else Gemm.LaunchGemm(gpu.Kernels, t.Layout, t.Type, ga.View, gwh.View, biasView, 1, t.M, n, kDim, 0, 0, 0, 0.75f, t.Accumulate, t.OutMode,
                default, gh.View, t.Tile, t.Splits);
            acc.Synchronize();
            return FromHalf(outType, gh.GetAsArray1D());
        }

        var got = Run(fused: true);
        var workspace = Run(fused: false);
        for (int i = 0; i < got.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(got[i]) == BitConverter.SingleToInt32Bits(workspace[i]),
                $"{t}: c[{i / n}, {i % n}] = {got[i]} fused, {workspace[i]} dequantize-then-GEMM");

        var want = Array.ConvertAll(c0, x => (double)x);
        Gemm.Nf4Cpu<double>(t.Layout, t.Type, aBits, packed, absmaxDq, code4, t.Rows, t.Cols, t.BlockSize, Array.ConvertAll(bias, x => (double)x),
            t.M, 0.75, t.Accumulate, want);
        // fp32 output: exact products, fp32 sums in another order. 16-bit output: one rounding (2^-8 or 2^-11 relative).
        double rtol = t.OutMode switch { 0 => 1e-5, 1 => 1.0 / 256, _ => 1.0 / 2048 };
        Close.Assert(t.ToString(), want, got, 1e-5 * Math.Sqrt(kDim + 1) + rtol * 1e-2, rtol);
    }

    // One warp (T1x1, 64x64 tile, K 32 a stage, 4 stages): whole tiles on the fast path with the deferred dequantizing store,
    // M/N tails sliding back, K tails, rows of the weight not a multiple of 8 (every chunk element by element), blocks of 32
    // (a K tile spans blocks) and 128, split-K, 16-bit outputs.
    [Theory]
    [InlineData(GemmLayout.NT, HalfType.BFloat16, 70, 72, 160, 64, 1, 0, true)]   // 5 whole K tiles: the ring wraps; M and N tails
    [InlineData(GemmLayout.NN, HalfType.BFloat16, 65, 136, 80, 64, 1, 1, false)]  // dX: W rows are K, N-major B (ldmatrix.trans)
    [InlineData(GemmLayout.NT, HalfType.Float16, 33, 64, 100, 32, 1, 2, true)]    // in % 8 != 0: guarded element-wise B, K tail
    [InlineData(GemmLayout.NN, HalfType.Float16, 64, 200, 64, 128, 2, 0, false)]  // split-K, K tail of 8
    [InlineData(GemmLayout.NT, HalfType.BFloat16, 8, 40, 256, 32, 3, 0, true)]    // skinny M, three splits
    public void OneWarp_EqualsDequantizeThenGemm(GemmLayout layout, HalfType type, int m, int rows, int cols, int blockSize, int splits,
        int outMode, bool accumulate) =>
        Check(new Case(layout, type, m, rows, cols, blockSize, Gemm.TileConfig.T1x1, splits, outMode, accumulate, accumulate, m * 31 + rows));

    // Four warps (T2x2, 128x128 tile, K 64 a stage, 3 stages; the skinny T1x2, 64x128): warp placement and 8 chunks a
    // thread; one group tile in range with 4 K tiles, so the main loop's deferred dequantizing store runs (tails: T1x1 above).
    [Theory]
    [InlineData(GemmLayout.NT, "T2x2", 128, 128, 256)]
    [InlineData(GemmLayout.NN, "T1x2", 64, 256, 128)]
    public void SeveralWarps_EqualsDequantizeThenGemm(GemmLayout layout, string tile, int m, int rows, int cols) =>
        Check(new Case(layout, HalfType.BFloat16, m, rows, cols, 64, Enum.Parse<Gemm.TileConfig>(tile), 1, 0, true, true, 17));

    // Hopper wgmma tiles (emulated): the dequantized chunks in the 128-byte-swizzled panels the descriptors read; W1N128's
    // N-major B spans two panels.
    [Theory]
    [InlineData(GemmLayout.NT, "W1N64", HalfType.BFloat16, 0)]
    [InlineData(GemmLayout.NN, "W1N128", HalfType.BFloat16, 0)]
    public void Wgmma_EqualsDequantizeThenGemm(GemmLayout layout, string tile, HalfType type, int outMode) =>
        Check(new Case(layout, type, 72, 136, 328, 64, Enum.Parse<Gemm.TileConfig>(tile), 1, outMode, true, true, 23));

    [Fact]
    public void Launcher_RejectsTheWeightGradLayout()
    {
        using var a = gpu.Accelerator.Allocate1D<ushort>(64);
        var op = new Nf4Operand(default, default, default, default, default, default, 8, 8, 64);
        Assert.Throws<ArgumentException>(() =>
            Gemm.RunNf4(gpu.Kernels, GemmLayout.TN, HalfType.BFloat16, a.View, op, default, 8, 1f, false, default(ArrayView<float>)));
    }
}
