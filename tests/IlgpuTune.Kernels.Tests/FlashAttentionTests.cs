using ILGPU;
using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class FlashAttentionTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1, 1, 1, 16, false)]
    [InlineData(1, 7, 2, 2, 16, false)]
    [InlineData(2, 7, 4, 2, 24, true)]
    [InlineData(1, 33, 4, 1, 16, false)] // three query blocks, the last one partial; GQA 4
    [InlineData(2, 33, 4, 2, 24, true)]
    [InlineData(1, 33, 2, 1, 24, true)]
    [InlineData(1, 20, 2, 1, 128, false)] // the largest head dim of 16-row tiles
    [InlineData(1, 40, 2, 1, 16, false, 5)] // sliding window: later blocks skip the key tiles before it, key blocks the queries after
    [InlineData(2, 33, 4, 2, 24, true, 7, 0.3f)] // window, packed rows and an explicit scale (Gemma's query_pre_attn_scalar)
    [InlineData(1, 17, 2, 1, 256, false)] // Gemma 3's head dim: 8-row tiles, the partial last block
    [InlineData(1, 19, 2, 1, 256, false, 9, 0.0625f)]
    public void Kernel_MatchesNaiveCpuReference(int batch, int seq, int numHeads, int numKvHeads, int headDim, bool packed, int window = 0,
        float scale = 0f)
    {
        var sizes = new Attention.Sizes(batch, seq, numHeads, numKvHeads, headDim, Window: window, Scale: scale == 0f ? null : scale);
        int tokens = batch * seq, qn = tokens * numHeads * headDim, kvn = tokens * numKvHeads * headDim, rows = batch * numHeads * seq;
        var q = Rand.Floats(1, qn, 2f);
        var k = Rand.Floats(2, kvn, 2f);
        var v = Rand.Floats(3, kvn);
        var dO = Rand.Floats(4, qn);
        var segments = packed ? Segments(5, batch, seq) : [];
        var probs = new float[rows * seq];
        var (o, lse) = (new float[qn], new float[rows]);
        var (dQ, dK, dV) = (new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, k, v, segments, sizes, o, lse, probs);
        Attention.BackwardCpu<float>(dO, q, k, v, segments, sizes, dQ, dK, dV);

        using var gq = gpu.Upload(q); using var gk = gpu.Upload(k); using var gv = gpu.Upload(v); using var gdO = gpu.Upload(dO);
        using var gseg = packed ? gpu.Upload(segments) : null;
        // Outputs and scratch start as garbage: everything is overwritten.
        using var go = gpu.Upload(Rand.Floats(6, qn)); using var glse = gpu.Upload(Rand.Floats(7, rows));
        using var gdelta = gpu.Upload(Rand.Floats(8, rows)); using var gdQ = gpu.Upload(Rand.Floats(9, qn));
        using var gdK = gpu.Upload(Rand.Floats(10, kvn)); using var gdV = gpu.Upload(Rand.Floats(11, kvn));
        var segView = gseg?.View ?? ArrayView<int>.Empty;
        FlashAttention.Forward(gpu.Kernels, new(gq.View, gk.View, gv.View, segView), sizes,
            new(go.View, glse.View));
        FlashAttention.Backward(gpu.Kernels, gdO.View, new(gq.View, gk.View, gv.View, segView), sizes, new(go.View, glse.View), gdelta.View, new(gdQ.View, gdK.View, gdV.View));
        gpu.Accelerator.Synchronize();

        Close.Assert("o", o, go.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("logSumExp", lse, glse.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dQ", dQ, gdQ.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dK", dK, gdK.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dV", dV, gdV.GetAsArray1D(), 1e-5, 1e-4);
    }

    [Fact]
    public void Kernel_ManyShortSamplesInOneRow()
    {
        // 33 tokens packed as samples of lengths 1, 1, 5, 2, 16, 8: tiles straddle sample boundaries and single-token samples.
        const int seq = 33, numHeads = 4, numKvHeads = 2, headDim = 16;
        int[] lengths = [1, 1, 5, 2, 16, 8];
        var segments = lengths.SelectMany((n, id) => Enumerable.Repeat(id, n)).ToArray();
        int qn = seq * numHeads * headDim, kvn = seq * numKvHeads * headDim, rows = numHeads * seq;
        var q = Rand.Floats(21, qn, 2f);
        var k = Rand.Floats(22, kvn, 2f);
        var v = Rand.Floats(23, kvn);
        var dO = Rand.Floats(24, qn);
        var (probs, o) = (new float[rows * seq], new float[qn]);
        var (dQ, dK, dV) = (new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, k, v, segments, new(1, seq, numHeads, numKvHeads, headDim), o, [], probs);
        Attention.BackwardCpu<float>(dO, q, k, v, segments, new(1, seq, numHeads, numKvHeads, headDim), dQ, dK, dV);

        using var gq = gpu.Upload(q); using var gk = gpu.Upload(k); using var gv = gpu.Upload(v); using var gdO = gpu.Upload(dO);
        using var gseg = gpu.Upload(segments);
        using var go = gpu.Zeros(qn); using var glse = gpu.Zeros(rows); using var gdelta = gpu.Zeros(rows);
        using var gdQ = gpu.Zeros(qn); using var gdK = gpu.Zeros(kvn); using var gdV = gpu.Zeros(kvn);
        FlashAttention.Forward(gpu.Kernels, new(gq.View, gk.View, gv.View, gseg.View), new(1, seq, numHeads, numKvHeads, headDim),
            new(go.View, glse.View));
        FlashAttention.Backward(gpu.Kernels, gdO.View, new(gq.View, gk.View, gv.View, gseg.View), new(1, seq, numHeads, numKvHeads,
            headDim), new(go.View, glse.View), gdelta.View, new(gdQ.View, gdK.View, gdV.View));
        gpu.Accelerator.Synchronize();

        Close.Assert("o", o, go.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dQ", dQ, gdQ.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dK", dK, gdK.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dV", dV, gdV.GetAsArray1D(), 1e-5, 1e-4);
    }

    [Property(MaxTest = 40)]
    public Property LogSumExpCpu_NormalizesNaiveProbs()
    {
        // The saved statistic is what backward recomputes P from: exp(s_ij - lse_i) must equal the naive softmax row.
        var shapes = from batch in Gen.Choose(1, 2) from seq in Gen.Choose(1, 6) from numKvHeads in Gen.Choose(1, 2)
                     from groups in Gen.Elements(1, 2, 4) from headDim in Gen.Choose(1, 5) from packed in Gen.Elements(false, true)
                     from seed in Gen.Choose(0, 10000) select (batch, seq, numHeads: numKvHeads * groups, numKvHeads, headDim, packed, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (batch, seq, numHeads, numKvHeads, headDim, packed, seed) = s;
            int tokens = batch * seq, groups = numHeads / numKvHeads;
            var q = Rand.Doubles(seed, tokens * numHeads * headDim, 2);
            var k = Rand.Doubles(seed + 1, tokens * numKvHeads * headDim, 2);
            var segments = packed ? Segments(seed + 2, batch, seq) : [];
            var probs = new double[batch * numHeads * seq * seq];
            var lse = new double[batch * numHeads * seq];
            Attention.ForwardCpu<double>(q, k, new double[k.Length], segments, new(batch, seq, numHeads, numKvHeads, headDim),
                new double[q.Length], lse, probs);
            double scale = 1 / Math.Sqrt(headDim);
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < numHeads; h++)
                    for (int i = 0; i < seq; i++)
                        for (int j = 0; j < seq; j++)
                        {
                            double p = probs[((b * numHeads + h) * seq + i) * seq + j];
                            if (p == 0) continue; // masked
                            double dot = 0;
                            for (int d = 0; d < headDim; d++)
                                dot += q[((b * seq + i) * numHeads + h) * headDim + d] * k[((b * seq + j) * numKvHeads + h / groups) * headDim + d];
                            Assert.Equal(p, Math.Exp(dot * scale - lse[(b * numHeads + h) * seq + i]), 1e-12);
                        }
        });
    }

    [Fact]
    public void RejectsHeadDimPastTheTiles() =>
        Assert.Throws<ArgumentException>(() =>
            FlashAttention.Forward(gpu.Kernels, new(default, default, default, default), new(1, 1, 1, 1, FlashAttention.MaxHeadDim + 1), new(default, default)));

    // Nondecreasing segment ids per row, a new sample starting with probability 1/3.
    static int[] Segments(int seed, int batch, int seq)
    {
        var r = new Random(seed);
        var ids = new int[batch * seq];
        for (int t = 1; t < ids.Length; t++) ids[t] = ids[t - 1] + (t % seq == 0 || r.Next(3) == 0 ? 1 : 0);
        return ids;
    }
}
