using ILGPU;
using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class AttentionTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1, 1, 1, 1, false)]
    [InlineData(2, 3, 2, 1, 5, false)]
    [InlineData(1, 7, 4, 2, 6, true)]
    [InlineData(2, 5, 3, 3, 8, true)]
    [InlineData(1, 40, 2, 1, 4, true)] // seq > one 32-thread group
    public void Kernel_MatchesCpuReference(int batch, int seq, int numHeads, int numKvHeads, int headDim, bool packed)
    {
        int tokens = batch * seq, qn = tokens * numHeads * headDim, kvn = tokens * numKvHeads * headDim, pn = batch * numHeads * seq * seq;
        var q = Rand.Floats(1, qn, 2f);
        var k = Rand.Floats(2, kvn, 2f);
        var v = Rand.Floats(3, kvn);
        var dO = Rand.Floats(4, qn);
        var segments = packed ? Segments(5, batch, seq) : [];
        var probs = new float[pn];
        var o = new float[qn];
        var (dQ, dK, dV) = (new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, k, v, segments, new(batch, seq, numHeads, numKvHeads, headDim), o, [], probs);
        Attention.BackwardCpu<float>(dO, q, k, v, segments, new(batch, seq, numHeads, numKvHeads, headDim), dQ, dK, dV);

        using var gq = gpu.Upload(q); using var gk = gpu.Upload(k); using var gv = gpu.Upload(v); using var gdO = gpu.Upload(dO);
        using var gseg = packed ? gpu.Upload(segments) : null;
        using var gp = gpu.Zeros(pn); using var go = gpu.Zeros(qn);
        // Outputs and scratch start as garbage: everything is overwritten.
        using var gdS = gpu.Upload(Rand.Floats(6, pn)); using var gdQ = gpu.Upload(Rand.Floats(7, qn));
        using var gdK = gpu.Upload(Rand.Floats(8, kvn)); using var gdV = gpu.Upload(Rand.Floats(9, kvn));
        var segView = gseg?.View ?? ArrayView<int>.Empty;
        NaiveAttention.Forward(gpu.Kernels, gq.View, gk.View, gv.View, segView, batch, seq, numHeads, numKvHeads, headDim, gp.View,
            go.View);
        NaiveAttention.Backward(gpu.Kernels, gdO.View, gq.View, gk.View, gv.View, gp.View, batch, seq, numHeads, numKvHeads, headDim,
            gdS.View, gdQ.View, gdK.View, gdV.View);
        gpu.Accelerator.Synchronize();

        Close.Assert("probs", probs, gp.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("o", o, go.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dQ", dQ, gdQ.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dK", dK, gdK.GetAsArray1D(), 1e-5, 1e-4);
        Close.Assert("dV", dV, gdV.GetAsArray1D(), 1e-5, 1e-4);
    }

    [Fact]
    public void Forward_FirstQuerySeesOnlyFirstKey()
    {
        const int seq = 4, heads = 2, headDim = 3;
        var q = Rand.Doubles(1, seq * heads * headDim);
        var k = Rand.Doubles(2, seq * headDim);
        var v = Rand.Doubles(3, seq * headDim);
        var probs = new double[heads * seq * seq];
        var o = new double[q.Length];
        Attention.ForwardCpu<double>(q, k, v, [], new(1, seq, heads, 1, headDim), o, [], probs);
        for (int h = 0; h < heads; h++)
        {
            Assert.Equal(v.AsSpan(0, headDim).ToArray(), o.AsSpan(h * headDim, headDim).ToArray());
            for (int i = 0; i < seq; i++)
                for (int j = i + 1; j < seq; j++) Assert.Equal(0, probs[(h * seq + i) * seq + j]);
        }
    }

    [Fact]
    public void Forward_GroupedHeadsEqualRepeatedKv()
    {
        // HF repeat_kv: kv head g serves query heads g*G .. g*G+G-1. Repeating k/v per query head must give the same result.
        const int batch = 2, seq = 3, numHeads = 4, numKvHeads = 2, headDim = 2, groups = numHeads / numKvHeads;
        var q = Rand.Doubles(1, batch * seq * numHeads * headDim);
        var k = Rand.Doubles(2, batch * seq * numKvHeads * headDim);
        var v = Rand.Doubles(3, k.Length);
        double[] Repeat(double[] kv)
        {
            var r = new double[q.Length];
            for (int t = 0; t < batch * seq; t++)
                for (int h = 0; h < numHeads; h++)
                    kv.AsSpan((t * numKvHeads + h / groups) * headDim, headDim).CopyTo(r.AsSpan((t * numHeads + h) * headDim));
            return r;
        }
        var (oGrouped, oRepeated) = (new double[q.Length], new double[q.Length]);
        var probs = new double[batch * numHeads * seq * seq];
        Attention.ForwardCpu<double>(q, k, v, [], new(batch, seq, numHeads, numKvHeads, headDim), oGrouped, [], probs);
        Attention.ForwardCpu<double>(q, Repeat(k), Repeat(v), [], new(batch, seq, numHeads, numHeads, headDim), oRepeated, [], probs);
        Assert.Equal(oRepeated, oGrouped);
    }

    [Fact]
    public void Forward_SegmentsIsolatePackedSamples()
    {
        // One row packing samples of lengths 2 and 3 equals the two samples run on their own.
        const int heads = 2, headDim = 3;
        var q = Rand.Doubles(1, 5 * heads * headDim);
        var k = Rand.Doubles(2, 5 * headDim);
        var v = Rand.Doubles(3, 5 * headDim);
        var oPacked = new double[q.Length];
        Attention.ForwardCpu<double>(q, k, v, [7, 7, 9, 9, 9], new(1, 5, heads, 1, headDim), oPacked, [], new double[heads * 25]);
        foreach (var (start, len) in new[] { (0, 2), (2, 3) })
        {
            var o = new double[len * heads * headDim];
            Attention.ForwardCpu<double>(q.AsSpan(start * heads * headDim, o.Length), k.AsSpan(start * headDim, len * headDim),
                v.AsSpan(start * headDim, len * headDim), [], new(1, len, heads, 1, headDim), o, [], new double[heads * len * len]);
            Assert.Equal(o, oPacked.AsSpan(start * heads * headDim, o.Length).ToArray());
        }
    }

    [Fact]
    public void Forward_WindowOfOneSeesOnlyItself()
    {
        // i - j < 1 leaves key i alone: o_i = v_i; a window as long as the row changes nothing.
        const int seq = 5, heads = 2, headDim = 3;
        var q = Rand.Floats(31, seq * heads * headDim, 2f);
        var k = Rand.Floats(32, seq * heads * headDim, 2f);
        var v = Rand.Floats(33, seq * heads * headDim);
        var o = new float[q.Length];
        Attention.ForwardCpu<float>(q, k, v, [], new(1, seq, heads, heads, headDim, Window: 1), o, []);
        Assert.Equal(v, o);
        var (full, wide) = (new float[q.Length], new float[q.Length]);
        Attention.ForwardCpu<float>(q, k, v, [], new(1, seq, heads, heads, headDim), full, []);
        Attention.ForwardCpu<float>(q, k, v, [], new(1, seq, heads, heads, headDim, Window: seq), wide, []);
        Assert.Equal(full, wide);
    }

    [Fact]
    public void RejectsNegativeOrNonCausalWindow()
    {
        Assert.Throws<ArgumentException>(() => new Attention.Sizes(1, 2, 1, 1, 2, Window: -1).Validate());
        Assert.Throws<ArgumentException>(() => new Attention.Sizes(1, 2, 1, 1, 2, Causal: false, Window: 2).Validate());
    }

    [Fact]
    public void RejectsHeadsNotMultipleOfKvHeads() =>
        Assert.Throws<ArgumentException>(() =>
            Attention.ForwardCpu<float>(new float[3], new float[2], new float[2], [], new(1, 1, 3, 2, 1), new float[3], [], new float[3]));

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from batch in Gen.Choose(1, 2) from seq in Gen.Choose(1, 4) from numKvHeads in Gen.Choose(1, 2)
                     from groups in Gen.Choose(1, 2) from headDim in Gen.Choose(1, 4) from packed in Gen.Elements(false, true)
                     from window in Gen.Choose(0, 3) from scale in Gen.Elements<float?>(null, 0.7f)
                     from seed in Gen.Choose(0, 10000)
                     select (batch, seq, numHeads: numKvHeads * groups, numKvHeads, headDim, packed, window, scale, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (batch, seq, numHeads, numKvHeads, headDim, packed, window, scale, seed) = s;
            var sizes = new Attention.Sizes(batch, seq, numHeads, numKvHeads, headDim, Window: window, Scale: scale);
            int tokens = batch * seq;
            var q = Rand.Doubles(seed, tokens * numHeads * headDim, 2);
            var k = Rand.Doubles(seed + 1, tokens * numKvHeads * headDim, 2);
            var v = Rand.Doubles(seed + 2, k.Length);
            var g = Rand.Doubles(seed + 3, q.Length);
            var segments = packed ? Segments(seed + 4, batch, seq) : [];
            var probs = new double[batch * numHeads * seq * seq];
            double Loss(double[] qq, double[] kk, double[] vv)
            {
                var o = new double[q.Length];
                Attention.ForwardCpu<double>(qq, kk, vv, segments, sizes, o, [],
                    new double[probs.Length]);
                double l = 0;
                for (int i = 0; i < o.Length; i++) l += g[i] * o[i];
                return l;
            }
            Attention.ForwardCpu<double>(q, k, v, segments, sizes, new double[q.Length], [],
                probs);
            var (dQ, dK, dV) = (new double[q.Length], new double[k.Length], new double[v.Length]);
            Attention.BackwardCpu<double>(g, q, k, v, segments, sizes, dQ, dK, dV);
            FiniteDifference.Check("dQ", q, dQ, qq => Loss(qq, k, v));
            FiniteDifference.Check("dK", k, dK, kk => Loss(q, kk, v));
            FiniteDifference.Check("dV", v, dV, vv => Loss(q, k, vv));
        });
    }

    // ---- ForwardWithCache (inference) ----

    [Theory]
    [InlineData(0, 1, 1, 1, 1)]
    [InlineData(0, 5, 4, 2, 6)] // prefill
    [InlineData(6, 1, 4, 2, 6)] // one decode step
    [InlineData(3, 3, 3, 3, 5)] // several new tokens after a cached prefix (next chat turn)
    [InlineData(38, 1, 2, 1, 4)] // keys > one 32-thread group
    [InlineData(38, 3, 2, 1, 4, 5, 0.3f)] // sliding window of 5 keys, explicit scale
    [InlineData(0, 6, 2, 2, 4, 2)]
    public void CachedKernel_MatchesCpuReference(int queryStart, int queries, int numHeads, int numKvHeads, int headDim, int window = 0,
        float scale = 0f)
    {
        float? sc = scale == 0f ? null : scale;
        int keys = queryStart + queries, capacity = keys + 2; // unused cache rows past the keys must be ignored
        int qn = queries * numHeads * headDim, cn = capacity * numKvHeads * headDim, pn = queries * numHeads * keys;
        var q = Rand.Floats(1, qn, 2f);
        var k = Rand.Floats(2, cn, 2f);
        var v = Rand.Floats(3, cn);
        var (probs, o) = (new float[pn], new float[qn]);
        Attention.ForwardWithCacheCpu<float>(q, k, v, queryStart, queries, numHeads, numKvHeads, headDim, probs, o, window, sc);

        using var gq = gpu.Upload(q); using var gk = gpu.Upload(k); using var gv = gpu.Upload(v);
        using var gp = gpu.Upload(Rand.Floats(4, pn)); using var go = gpu.Upload(Rand.Floats(5, qn)); // garbage: overwritten
        Attention.ForwardWithCache(gpu.Kernels, gq.View, gk.View, gv.View, queryStart, queries, numHeads, numKvHeads, headDim, gp.View, go.View,
            window, sc);
        gpu.Accelerator.Synchronize();

        Close.Assert("probs", probs, gp.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("o", o, go.GetAsArray1D(), 1e-5, 1e-4);
    }

    [Property(MaxTest = 40)]
    public Property CachedCpu_EqualsUncachedForwardRows()
    {
        // Feeding a sequence in chunks through the cache gives the uncached causal forward's rows exactly.
        var shapes = from seq in Gen.Choose(1, 7) from numKvHeads in Gen.Choose(1, 2) from groups in Gen.Choose(1, 3)
                     from headDim in Gen.Choose(1, 5) from window in Gen.Choose(0, 4) from scale in Gen.Elements<float?>(null, 0.7f)
                     from seed in Gen.Choose(0, 10000) select (seq, numKvHeads, numHeads: numKvHeads * groups, headDim, window, scale, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (seq, numKvHeads, numHeads, headDim, window, scale, seed) = s;
            var q = Rand.Doubles(seed, seq * numHeads * headDim, 2);
            var k = Rand.Doubles(seed + 1, seq * numKvHeads * headDim, 2);
            var v = Rand.Doubles(seed + 2, k.Length);
            var full = new double[q.Length];
            Attention.ForwardCpu<double>(q, k, v, [], new(1, seq, numHeads, numKvHeads, headDim, Window: window, Scale: scale), full, [],
                new double[numHeads * seq * seq]);
            var rng = new Random(seed);
            for (int start = 0; start < seq;)
            {
                int n = rng.Next(1, seq - start + 1), row = numHeads * headDim;
                var o = new double[n * row];
                Attention.ForwardWithCacheCpu<double>(q.AsSpan(start * row, o.Length), k, v, start, n, numHeads, numKvHeads, headDim,
                    new double[n * numHeads * (start + n)], o, window, scale);
                Assert.Equal(full.AsSpan(start * row, o.Length).ToArray(), o);
                start += n;
            }
        });
    }

    [Fact]
    public void Cached_RejectsShortCache() =>
        Assert.Throws<ArgumentException>(() =>
            Attention.ForwardWithCacheCpu<float>(new float[2], new float[3], new float[3], 2, 1, 1, 1, 2, new float[3], new float[2]));

    // Nondecreasing segment ids per row, a new sample starting with probability 1/3.
    static int[] Segments(int seed, int batch, int seq)
    {
        var r = new Random(seed);
        var ids = new int[batch * seq];
        for (int t = 1; t < ids.Length; t++) ids[t] = ids[t - 1] + (t % seq == 0 || r.Next(3) == 0 ? 1 : 0);
        return ids;
    }
}
