using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// The Hopper (wgmma) forward through its CPU emulation: descriptors decoded as the hardware reads them, the 128-byte swizzle,
// the m64nNk16 accumulator fragment and the register A fragment of P·V (and of the backward's Pᵀ·dO, dSᵀ·Q). One warpgroup is
// 128 emulated threads, two are 256.
[Collection(IlgpuCpuCollection.Name)]
public class FlashAttentionHalfWgmmaTests(IlgpuCpuFixture gpu)
{
    static (ushort[] Bits, float[] Values) Half16(HalfType type, int seed, int n, float scale)
    {
        var f = Rand.Floats(seed, n, scale);
        var bits = new ushort[n];
        var back = new float[n];
        if (type == HalfType.BFloat16) { Cast.ToBf16Cpu(f, bits); Cast.FromBf16Cpu(bits, back); }
        else { Cast.ToF16Cpu(f, bits); Cast.FromF16Cpu(bits, back); }
        return (bits, back);
    }

    void Check(HalfType type, int batch, int seq, int numHeads, int numKvHeads, int headDim, bool causal, int[] segments, int warpgroups, int stages, int seed)
    {
        int tokens = batch * seq, qn = tokens * numHeads * headDim, kvn = tokens * numKvHeads * headDim, rows = batch * numHeads * seq;
        var (qBits, q) = Half16(type, seed, qn, 2f);
        var (kBits, k) = Half16(type, seed + 1, kvn, 2f);
        var (vBits, v) = Half16(type, seed + 2, kvn, 1f);
        var (o, lse) = (new float[qn], new float[rows]);
        Attention.ForwardCpu<float>(q, k, v, segments, new(batch, seq, numHeads, numKvHeads, headDim, causal), o, lse);

        var acc = gpu.Accelerator;
        using var gq = acc.Allocate1D(qBits); using var gk = acc.Allocate1D(kBits); using var gv = acc.Allocate1D(vBits);
        using var gseg = gpu.Upload(segments.Length > 0 ? segments : [0]);
        ArrayView<int> segView = segments.Length > 0 ? gseg.View.SubView(0, segments.Length) : ArrayView<int>.Empty;
        using var go = gpu.Upload(Rand.Floats(seed + 6, qn)); using var glse = gpu.Upload(Rand.Floats(seed + 7, rows));
        FlashAttentionHalf.ForwardWgmma(gpu.Kernels, type, new(gq.View, gk.View, gv.View, segView), new(batch, seq, numHeads,
            numKvHeads, headDim, causal), new(go.View, glse.View), warpgroups, stages);
        acc.Synchronize();
        double tol = type == HalfType.BFloat16 ? 2e-2 : 4e-3; // P enters P·V rounded to 16 bits
        double rel = Close.RelativeToMax(o, go.GetAsArray1D());
        Assert.True(rel <= tol, $"o: max error {rel:G3} of max |expected| (tolerance {tol:G3})");
        Close.Assert("logSumExp", lse, glse.GetAsArray1D(), 1e-4, 1e-4);
    }

    [Theory]
    [InlineData(1, 1, 1, 1, 64, true, 1, 2)]
    [InlineData(1, 70, 2, 1, 64, false, 1, 4)]   // two query blocks, the second partial; GQA 2
    [InlineData(1, 150, 4, 1, 128, true, 1, 3)]  // GQA 4, two key tiles (the second partial), causal over three query blocks
    [InlineData(2, 33, 2, 2, 128, false, 2, 2)]  // two warpgroups, the second past seq
    [InlineData(1, 300, 1, 1, 64, true, 2, 2)]   // three key tiles: the ring of 2 slots wraps
    [InlineData(1, 520, 1, 1, 128, false, 2, 3)] // five key tiles: the ring of 3 wraps
    [InlineData(1, 260, 2, 2, 64, false, 2, 4)]
    public void Forward_MatchesCpuReference(int batch, int seq, int numHeads, int numKvHeads, int headDim, bool causal, int warpgroups,
        int stages) =>
        Check(HalfType.BFloat16, batch, seq, numHeads, numKvHeads, headDim, causal, [], warpgroups, stages, seq * 10 + headDim);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Forward_PackedSamples(bool causal)
    {
        // 150 tokens in samples of 1, 1, 5, 2, 100, 41: tiles straddle sample boundaries; single-token samples.
        int[] lengths = [1, 1, 5, 2, 100, 41];
        var segments = lengths.SelectMany((n, id) => Enumerable.Repeat(id, n)).ToArray();
        Check(HalfType.BFloat16, 1, 150, 2, 1, 64, causal, segments, 1, 0, 31);
    }

    [Fact]
    public void Forward_Float16() => Check(HalfType.Float16, 1, 140, 2, 1, 128, true, [], 2, 0, 41);

    // The backward with the wgmma dK/dV kernel and, where ids are not sorted, the wgmma dQ kernel (emulated) against the reference;
    // o and logSumExp from the reference. Sorted packed ids run with tile skipping and must give the bits of the full loop.
    void CheckBackward(HalfType type, int batch, int seq, int numHeads, int numKvHeads, bool causal, int[] segments, int seed)
    {
        const int HeadDim = 128;
        bool sorted = segments.Length > 0 && FlashAttentionHalf.SegmentsSorted(segments, batch, seq);
        int tokens = batch * seq, qn = tokens * numHeads * HeadDim, kvn = tokens * numKvHeads * HeadDim, rows = batch * numHeads * seq;
        var (qBits, q) = Half16(type, seed, qn, 2f);
        var (kBits, k) = Half16(type, seed + 1, kvn, 2f);
        var (vBits, v) = Half16(type, seed + 2, kvn, 1f);
        var (_, dO) = Half16(type, seed + 3, qn, 1f); // exact in 16 bits, so the kernel's cast of dO is lossless
        var (o, lse) = (new float[qn], new float[rows]);
        var (dQ, dK, dV) = (new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, k, v, segments, new(batch, seq, numHeads, numKvHeads, HeadDim, causal), o, lse);
        Attention.BackwardCpu<float>(dO, q, k, v, segments, new(batch, seq, numHeads, numKvHeads, HeadDim, causal), dQ, dK, dV);

        var acc = gpu.Accelerator;
        using var gq = acc.Allocate1D(qBits); using var gk = acc.Allocate1D(kBits); using var gv = acc.Allocate1D(vBits);
        using var gdO = gpu.Upload(dO); using var gdOHalf = acc.Allocate1D<ushort>(qn);
        using var go = gpu.Upload(o); using var glse = gpu.Upload(lse);
        using var gseg = gpu.Upload(segments.Length > 0 ? segments : [0]);
        ArrayView<int> segView = segments.Length > 0 ? gseg.View.SubView(0, segments.Length) : ArrayView<int>.Empty;
        float[][] Run(bool skip, int s0)
        {
            // Outputs and scratch start as garbage: everything is overwritten.
            using var gdelta = gpu.Upload(Rand.Floats(s0, rows)); using var gdQ = gpu.Upload(Rand.Floats(s0 + 1, qn));
            using var gdK = gpu.Upload(Rand.Floats(s0 + 2, kvn)); using var gdV = gpu.Upload(Rand.Floats(s0 + 3, kvn));
            FlashAttentionHalf.Backward(gpu.Kernels, type, gdO.View, new(gq.View, gk.View, gv.View, segView, skip), new(batch, seq,
                numHeads, numKvHeads, HeadDim, causal), new(go.View, glse.View), gdOHalf.View, gdelta.View, new(gdQ.View, gdK.View,
                    gdV.View), (KeyValue: true, Query: !skip));
            acc.Synchronize();
            return [gdQ.GetAsArray1D(), gdK.GetAsArray1D(), gdV.GetAsArray1D()];
        }
        var got = Run(sorted, seed + 8);
        double tol = type == HalfType.BFloat16 ? 2e-2 : 4e-3; // P and dS enter dV and dK rounded to 16 bits
        string[] names = ["dQ", "dK", "dV"];
        float[][] expected = [dQ, dK, dV];
        for (int n = 0; n < 3; n++)
        {
            double rel = Close.RelativeToMax(expected[n], got[n]);
            Assert.True(rel <= tol, $"{names[n]}: max error {rel:G3} of max |expected| (tolerance {tol:G3})");
        }
        if (!sorted) return;
        var full = Run(false, seed + 20);
        double relQ = Close.RelativeToMax(dQ, full[0]); // the wgmma dQ kernel on packed ids
        Assert.True(relQ <= tol, $"dQ (full loop): max error {relQ:G3} of max |expected| (tolerance {tol:G3})");
        for (int n = 1; n < 3; n++)
            for (int i = 0; i < full[n].Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(full[n][i]) == BitConverter.SingleToInt32Bits(got[n][i]),
                    $"{names[n]}[{i}]: {got[n][i]:R} with tile skipping, {full[n][i]:R} without");
    }

    [Theory]
    [InlineData(1, 1, 1, 1, true)]
    [InlineData(1, 70, 2, 1, true)]    // GQA 2: one key block, its second warpgroup partly past seq; two query tiles per head
    [InlineData(1, 150, 2, 2, false)]  // two key blocks (the second partial), three query tiles
    [InlineData(2, 33, 4, 1, false)]   // GQA 4 over two batch rows
    [InlineData(1, 200, 1, 1, true)]   // causal: the second key block starts its query loop at tile 2
    public void BackwardKeyValue_MatchesCpuReference(int batch, int seq, int numHeads, int numKvHeads, bool causal) =>
        CheckBackward(HalfType.BFloat16, batch, seq, numHeads, numKvHeads, causal, [], seq * 10 + 7);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void BackwardKeyValue_PackedSamples(bool causal)
    {
        // 200 tokens in samples of 1, 1, 5, 2, 100, 61, then padding: sorted ids, so query tiles are skipped.
        int[] lengths = [1, 1, 5, 2, 100, 61];
        var segments = lengths.SelectMany((n, id) => Enumerable.Repeat(id, n)).Concat(Enumerable.Repeat(int.MaxValue, 30)).ToArray();
        CheckBackward(HalfType.BFloat16, 1, 200, 2, 1, causal, segments, 53);
    }

    [Fact]
    public void BackwardKeyValue_Float16() => CheckBackward(HalfType.Float16, 1, 90, 2, 1, true, [], 61);

    [Fact]
    public void RejectsHeadDimWithoutKernel()
    {
        using var b = gpu.Accelerator.Allocate1D<ushort>(32);
        using var f = gpu.Zeros(32);
        Assert.Throws<ArgumentException>(() => FlashAttentionHalf.ForwardWgmma(gpu.Kernels, HalfType.BFloat16, new(b.View, b.View,
            b.View, ArrayView<int>.Empty), new(1, 1, 1, 1, 32, false), new(f.View, f.View), 1));
    }
}
