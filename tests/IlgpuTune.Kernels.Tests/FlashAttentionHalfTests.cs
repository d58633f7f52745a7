using ILGPU;
using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// On the CPU accelerator the mma / ldmatrix / cp.async sites run Gemm's C# emulation, so these tests cover the tiling,
// swizzles, fragment layouts and masks of the tensor-core kernels; one group is 128 emulated threads, so shapes stay tiny.
[Collection(IlgpuCpuCollection.Name)]
public class FlashAttentionHalfTests(IlgpuCpuFixture gpu)
{
    // Random values rounded to 16 bits: the bits for the kernel, the exact values for the reference.
    static (ushort[] Bits, float[] Values) Half16(HalfType type, int seed, int n, float scale)
    {
        var f = Rand.Floats(seed, n, scale);
        var bits = new ushort[n];
        var back = new float[n];
        if (type == HalfType.BFloat16) { Cast.ToBf16Cpu(f, bits); Cast.FromBf16Cpu(bits, back); }
        else { Cast.ToF16Cpu(f, bits); Cast.FromF16Cpu(bits, back); }
        return (bits, back);
    }

    // Packed ids that never decrease along each row run with tile skipping, checked against the reference and, bit for bit,
    // against the full loop (segmentsSorted false).
    void Check(HalfType type, int batch, int seq, int numHeads, int numKvHeads, int headDim, bool causal, int[] segments, int seed,
        int window = 0)
    {
        bool sorted = segments.Length > 0 && FlashAttentionHalf.SegmentsSorted(segments, batch, seq);
        int tokens = batch * seq, qn = tokens * numHeads * headDim, kvn = tokens * numKvHeads * headDim, rows = batch * numHeads * seq;
        var (qBits, q) = Half16(type, seed, qn, 2f);
        var (kBits, k) = Half16(type, seed + 1, kvn, 2f);
        var (vBits, v) = Half16(type, seed + 2, kvn, 1f);
        var (_, dO) = Half16(type, seed + 3, qn, 1f); // exact in 16 bits, so the kernel's cast of dO is lossless
        var (o, lse) = (new float[qn], new float[rows]);
        var (dQ, dK, dV) = (new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, k, v, segments, new(batch, seq, numHeads, numKvHeads, headDim, causal, window), o, lse);
        Attention.BackwardCpu<float>(dO, q, k, v, segments, new(batch, seq, numHeads, numKvHeads, headDim, causal, window), dQ, dK, dV);

        var acc = gpu.Accelerator;
        using var gq = acc.Allocate1D(qBits); using var gk = acc.Allocate1D(kBits); using var gv = acc.Allocate1D(vBits);
        using var gdO = gpu.Upload(dO); using var gdOHalf = acc.Allocate1D<ushort>(qn);
        using var gseg = gpu.Upload(segments.Length > 0 ? segments : [0]);
        ArrayView<int> segView = segments.Length > 0 ? gseg.View.SubView(0, segments.Length) : ArrayView<int>.Empty;
        // Outputs and scratch start as garbage: everything is overwritten.
        using var go = gpu.Upload(Rand.Floats(seed + 6, qn)); using var glse = gpu.Upload(Rand.Floats(seed + 7, rows));
        using var gdelta = gpu.Upload(Rand.Floats(seed + 8, rows)); using var gdQ = gpu.Upload(Rand.Floats(seed + 9, qn));
        using var gdK = gpu.Upload(Rand.Floats(seed + 10, kvn)); using var gdV = gpu.Upload(Rand.Floats(seed + 11, kvn));
        FlashAttentionHalf.Forward(gpu.Kernels, type, new(gq.View, gk.View, gv.View, segView, sorted), new(batch, seq, numHeads,
            numKvHeads, headDim, causal, window), new(go.View, glse.View));
        acc.Synchronize();
        // P (and dS) enter the second products rounded to 16 bits: relative error ~2^-8 of the largest terms.
        double tol = type == HalfType.BFloat16 ? 2e-2 : 4e-3;
        AssertRel("o", o, go.GetAsArray1D(), tol);
        Close.Assert("logSumExp", lse, glse.GetAsArray1D(), 1e-4, 1e-4);

        FlashAttentionHalf.Backward(gpu.Kernels, type, gdO.View, new(gq.View, gk.View, gv.View, segView, sorted), new(batch, seq,
            numHeads, numKvHeads, headDim, causal, window), new(go.View, glse.View), gdOHalf.View, gdelta.View, new(gdQ.View, gdK.View, gdV.View));
        acc.Synchronize();
        AssertRel("dQ", dQ, gdQ.GetAsArray1D(), tol);
        AssertRel("dK", dK, gdK.GetAsArray1D(), tol);
        AssertRel("dV", dV, gdV.GetAsArray1D(), tol);
        if (!sorted) return;

        // The skipped tiles were fully masked: the full loop gives the same bits.
        var skipped = new[] { go, glse, gdQ, gdK, gdV }.Select(b => b.GetAsArray1D()).ToArray();
        using var fo = gpu.Upload(Rand.Floats(seed + 12, qn)); using var flse = gpu.Upload(Rand.Floats(seed + 13, rows));
        using var fdQ = gpu.Upload(Rand.Floats(seed + 14, qn));
        using var fdK = gpu.Upload(Rand.Floats(seed + 15, kvn)); using var fdV = gpu.Upload(Rand.Floats(seed + 16, kvn));
        FlashAttentionHalf.Forward(gpu.Kernels, type, new(gq.View, gk.View, gv.View, segView), new(batch, seq, numHeads, numKvHeads,
            headDim, causal, window), new(fo.View, flse.View));
        FlashAttentionHalf.Backward(gpu.Kernels, type, gdO.View, new(gq.View, gk.View, gv.View, segView), new(batch, seq, numHeads,
            numKvHeads, headDim, causal, window), new(fo.View, flse.View), gdOHalf.View, gdelta.View, new(fdQ.View, fdK.View, fdV.View));
        acc.Synchronize();
        string[] names = ["o", "logSumExp", "dQ", "dK", "dV"];
        var full = new[] { fo, flse, fdQ, fdK, fdV }.Select(b => b.GetAsArray1D()).ToArray();
        for (int n = 0; n < names.Length; n++)
            for (int i = 0; i < full[n].Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(full[n][i]) == BitConverter.SingleToInt32Bits(skipped[n][i]),
                    $"{names[n]}[{i}]: {skipped[n][i]:R} with tile skipping, {full[n][i]:R} without");
    }

    // Packed rows of samples with these lengths, then padding (id int.MaxValue, as the trainer pads) to seq.
    static int[] Packed(int seq, params int[][] rows) =>
        rows.SelectMany(lengths => lengths.SelectMany((n, id) => Enumerable.Repeat(id, n))
            .Concat(Enumerable.Repeat(int.MaxValue, seq - lengths.Sum()))).ToArray();

    // |actual - expected| <= tol * max|expected| everywhere (the metric of the parity suite).
    static void AssertRel(string name, float[] expected, float[] actual, double tol)
    {
        double rel = Close.RelativeToMax(expected, actual);
        Assert.True(rel <= tol, $"{name}: max error {rel:G3} of max |expected| (tolerance {tol:G3})");
    }

    [Theory]
    [InlineData(1, 1, 1, 1, 16, true)]
    [InlineData(1, 7, 2, 2, 16, false)]
    [InlineData(1, 70, 2, 1, 16, true)]  // two blocks, the second partial; GQA 2
    [InlineData(1, 70, 4, 1, 16, false)] // GQA 4, every key visible
    [InlineData(1, 130, 1, 1, 16, true)] // two 128-row query blocks, three 64-key tiles
    [InlineData(2, 33, 2, 2, 64, true)]
    [InlineData(1, 65, 2, 1, 64, false)]
    public void Kernel_MatchesCpuReference(int batch, int seq, int numHeads, int numKvHeads, int headDim, bool causal) =>
        Check(HalfType.BFloat16, batch, seq, numHeads, numKvHeads, headDim, causal, [], seq * 10 + headDim);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Kernel_PackedSamples(bool causal)
    {
        // 70 tokens in samples of 1, 1, 5, 2, 40, 21: tiles straddle sample boundaries; single-token samples.
        int[] lengths = [1, 1, 5, 2, 40, 21];
        var segments = lengths.SelectMany((n, id) => Enumerable.Repeat(id, n)).ToArray();
        Check(HalfType.BFloat16, 1, 70, 2, 1, 16, causal, segments, 31);
    }

    // Many short samples: most (query block, key tile) pairs are skipped; single-token samples, padding at the end.
    [Theory]
    [InlineData(true, 2, 1)]
    [InlineData(false, 2, 1)]
    [InlineData(true, 4, 2)]
    [InlineData(false, 3, 3)]
    public void Kernel_ManyShortSamples(bool causal, int numHeads, int numKvHeads) =>
        Check(HalfType.BFloat16, 1, 150, numHeads, numKvHeads, 16, causal, Packed(150, [1, 7, 40, 3, 2, 30, 12, 1, 20]), 71);

    // A sample spanning several key tiles and query blocks; two rows packed differently (one ends in padding); head dims with
    // other block shapes (d 64: dK/dV query tiles of 32; d 128: dQ blocks of 64 rows, dK/dV blocks of 64 keys).
    [Theory]
    [InlineData(true, 16)]
    [InlineData(false, 16)]
    [InlineData(true, 64)]
    [InlineData(false, 128)]
    [InlineData(true, 128)]
    public void Kernel_SampleSpanningTiles(bool causal, int headDim) =>
        Check(HalfType.BFloat16, 2, 200, 2, 1, headDim, causal, Packed(200, [3, 150, 47], [70, 1, 60, 2]), 81 + headDim);

    // Sliding windows (i - j < window): the forward/dQ blocks start past the key tiles before their window, the dK/dV blocks stop
    // before the query tiles past theirs; with sorted packed rows the skipping is also checked bit for bit against the full loop.
    // (d 16: the second 128-row block starts at key tile 1; d 128: 64-key dK/dV blocks stop after 3 of 5 query tiles of 32.)
    [Theory]
    [InlineData(16, false)]
    [InlineData(128, true)]
    public void Kernel_SlidingWindow(int headDim, bool packed) =>
        Check(HalfType.BFloat16, packed ? 2 : 1, 150, 2, 1, headDim, true, packed ? Packed(150, [3, 100, 47], [70, 1, 60, 2]) : [],
            91 + headDim, window: 20);

    [Fact]
    public void Supports_GeneratedHeadDims()
    {
        Assert.True(FlashAttentionHalf.Supports(new(1, 8, 2, 1, 64, Window: 3)));
        Assert.False(FlashAttentionHalf.Supports(new(1, 8, 2, 1, 256)));
    }

    // Ids that go back down within a row are allowed too; they take the full loop.
    [Fact]
    public void Kernel_UnsortedSegments()
    {
        var segments = Enumerable.Range(0, 100).Select(t => t / 7 % 3).ToArray();
        Assert.False(FlashAttentionHalf.SegmentsSorted(segments, 1, 100));
        Check(HalfType.BFloat16, 1, 100, 2, 1, 16, true, segments, 91);
    }

    [Fact]
    public void SegmentsSorted_IsPerRow()
    {
        Assert.True(FlashAttentionHalf.SegmentsSorted([0, 0, 1, int.MaxValue, 0, 1, 1, 1], 2, 4));
        Assert.False(FlashAttentionHalf.SegmentsSorted([0, 0, 1, int.MaxValue, 0, 1, 0, 1], 2, 4));
        Assert.Throws<ArgumentException>(() => FlashAttentionHalf.SegmentsSorted([0, 1, 2], 2, 2));
    }

    [Fact]
    public void Kernel_Float16_HeadDim32() => Check(HalfType.Float16, 1, 40, 2, 2, 32, true, [], 41);

    [Fact]
    public void Kernel_HeadDim128() => Check(HalfType.BFloat16, 1, 20, 1, 1, 128, true, [], 51);

    [Property(MaxTest = 25)]
    public Property BackwardCpu_MatchesFiniteDifferences()
    {
        var shapes = from batch in Gen.Choose(1, 2) from seq in Gen.Choose(1, 5) from numKvHeads in Gen.Choose(1, 2)
                     from groups in Gen.Elements(1, 2) from headDim in Gen.Choose(1, 4) from causal in Gen.Elements(false, true)
                     from packed in Gen.Elements(false, true) from seed in Gen.Choose(0, 10000)
                     select (batch, seq, numHeads: numKvHeads * groups, numKvHeads, headDim, causal, packed, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (batch, seq, numHeads, numKvHeads, headDim, causal, packed, seed) = s;
            int tokens = batch * seq, qn = tokens * numHeads * headDim, kvn = tokens * numKvHeads * headDim;
            var q = Rand.Doubles(seed, qn);
            var k = Rand.Doubles(seed + 1, kvn);
            var v = Rand.Doubles(seed + 2, kvn);
            var w = Rand.Doubles(seed + 3, qn); // loss = sum(o * w), so dO = w
            var segments = packed ? Enumerable.Range(0, tokens).Select(t => t % seq / 2).ToArray() : [];
            double Loss(double[] qq, double[] kk, double[] vv)
            {
                var o = new double[qn];
                Attention.ForwardCpu<double>(qq, kk, vv, segments, new(batch, seq, numHeads, numKvHeads, headDim, causal), o,
                    new double[batch * numHeads * seq]);
                double l = 0;
                for (int i = 0; i < qn; i++) l += o[i] * w[i];
                return l;
            }
            var (dQ, dK, dV) = (new double[qn], new double[kvn], new double[kvn]);
            Attention.BackwardCpu<double>(w, q, k, v, segments, new(batch, seq, numHeads, numKvHeads, headDim, causal), dQ, dK, dV);
            FiniteDifference.Check("dQ", q, dQ, x => Loss(x, k, v));
            FiniteDifference.Check("dK", k, dK, x => Loss(q, x, v));
            FiniteDifference.Check("dV", v, dV, x => Loss(q, k, x));
        });
    }

    [Fact]
    public void RejectsHeadDimWithoutKernel()
    {
        using var b = gpu.Accelerator.Allocate1D<ushort>(48);
        using var f = gpu.Zeros(48);
        Assert.Throws<ArgumentException>(() => FlashAttentionHalf.Forward(gpu.Kernels, HalfType.BFloat16, new(b.View, b.View, b.View,
            ArrayView<int>.Empty), new(1, 1, 1, 1, 48, false), new(f.View, f.View)));
    }
}
