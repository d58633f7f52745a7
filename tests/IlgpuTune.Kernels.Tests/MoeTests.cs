using ILGPU;
using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class MoeTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 2, 1, false, 3, false)]
    [InlineData(9, 4, 2, true, 5, true)] // Mixtral-like: top-2 renormalised
    [InlineData(70, 8, 2, false, 6, false)] // more slots than the emulator's 32 sort threads
    [InlineData(13, 16, 4, true, 4, true)]
    public void Kernels_MatchCpuReference(int tokens, int experts, int topK, bool normalize, int hidden, bool masked)
    {
        var logits = Rand.Floats(1, tokens * experts, 3f);
        var x = Rand.Floats(2, tokens * hidden);
        var dWeights = Rand.Floats(3, tokens * topK);
        var dY = Rand.Floats(4, tokens * hidden);
        var mask = masked ? Enumerable.Range(0, tokens).Select(t => t % 3 == 2 ? 0f : 1f).ToArray() : [];
        var grad = Rand.Floats(5, experts);

        var (w, sel) = (new float[tokens * topK], new int[tokens * topK]);
        Moe.RouterForwardCpu<float>(logits, experts, topK, normalize, w, sel);
        var dLogits = new float[logits.Length];
        Moe.RouterBackwardCpu<float>(dWeights, logits, sel, experts, topK, normalize, dLogits);
        var (counts, order) = (new int[experts], new int[tokens * topK]);
        Moe.SortCpu(sel, experts, counts, order);
        var (auxCounts, auxProbs, auxD) = (new float[experts], new float[experts], new float[logits.Length]);
        Moe.AuxStatsCpu<float>(logits, sel, mask, experts, topK, auxCounts, auxProbs);
        Moe.AuxBackwardCpu<float>(logits, mask, grad, experts, auxD);

        using var gl = gpu.Upload(logits); using var gw = gpu.Zeros(w.Length); using var gsel = gpu.Upload(new int[sel.Length]);
        using var gdw = gpu.Upload(dWeights); using var gdl = gpu.Upload(Rand.Floats(6, logits.Length));
        using var gcounts = gpu.Upload(new int[experts]); using var gorder = gpu.Upload(new int[order.Length]);
        Moe.RouterForward(gpu.Kernels, gl.View, tokens, experts, topK, normalize, gw.View, gsel.View);
        Moe.RouterBackward(gpu.Kernels, gdw.View, gl.View, gsel.View, tokens, experts, topK, normalize, gdl.View);
        Moe.Sort(gpu.Kernels, gsel.View, sel.Length, experts, gcounts.View, gorder.View);
        using var gmask = gpu.Upload(masked ? mask : [0f]);
        using var gac = gpu.Zeros(experts); using var gap = gpu.Zeros(experts); using var ggrad = gpu.Upload(grad);
        using var grp = gpu.Zeros(logits.Length); using var grc = gpu.Zeros(logits.Length); using var gad = gpu.Zeros(logits.Length);
        var maskView = masked ? gmask.View : gmask.View.SubView(0, 0);
        Moe.AuxStats(gpu.Kernels, gl.View, gsel.View, maskView, tokens, experts, topK, grp.View, grc.View, gac.View, gap.View);
        Moe.AuxBackward(gpu.Kernels, gl.View, maskView, ggrad.View, tokens, experts, gad.View);
        gpu.Accelerator.Synchronize();
        Assert.Equal(sel, gsel.GetAsArray1D());
        Close.Assert("weights", w, gw.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dLogits", dLogits, gdl.GetAsArray1D(), 1e-6, 1e-5);
        Assert.Equal(counts, gcounts.GetAsArray1D());
        Assert.Equal(order, gorder.GetAsArray1D());
        Close.Assert("aux counts", auxCounts, gac.GetAsArray1D(), 0, 0);
        Close.Assert("aux probs", auxProbs, gap.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("aux dLogits", auxD, gad.GetAsArray1D(), 1e-6, 1e-5);

        // Every expert's rows through gather, combine and their backward, expert after expert (as Ops.MoeExperts runs them).
        var (y, dX, dW) = (new float[tokens * hidden], new float[tokens * hidden], new float[w.Length]);
        using var gx = gpu.Upload(x); using var gy = gpu.Zeros(y.Length); using var gdX = gpu.Zeros(dX.Length);
        using var gdY = gpu.Upload(dY); using var gdW = gpu.Zeros(dW.Length);
        for (int e = 0, offset = 0; e < experts; offset += counts[e++])
        {
            int rows = counts[e];
            if (rows == 0) continue;
            var xe = new float[rows * hidden];
            Moe.GatherCpu<float>(x, order, offset, topK, hidden, xe);
            var ye = xe.Select((v, i) => v * (e + 1) + i % 3).ToArray(); // some expert output
            var dYe = new float[ye.Length];
            Moe.CombineCpu<float>(ye, w, order, offset, topK, hidden, y);
            Moe.CombineBackwardCpu<float>(dY, ye, w, order, offset, topK, hidden, dYe, dW);
            Moe.GatherBackwardCpu<float>(dYe, order, offset, topK, hidden, dX);

            using var gxe = gpu.Zeros(xe.Length); using var gye = gpu.Upload(ye); using var gdYe = gpu.Zeros(ye.Length);
            Moe.Gather(gpu.Kernels, gx.View, gorder.View, offset, rows, topK, hidden, gxe.View);
            Moe.Combine(gpu.Kernels, gye.View, gw.View, gorder.View, offset, rows, topK, hidden, gy.View);
            Moe.CombineBackward(gpu.Kernels, gdY.View, gye.View, gw.View, gorder.View, offset, rows, topK, hidden, gdYe.View, gdW.View);
            Moe.GatherBackward(gpu.Kernels, gdYe.View, gorder.View, offset, rows, topK, hidden, gdX.View);
            gpu.Accelerator.Synchronize();
            Assert.Equal(xe, gxe.GetAsArray1D());
        }
        Close.Assert("y", y, gy.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dWeights", dW, gdW.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dX", dX, gdX.GetAsArray1D(), 1e-5, 1e-5);
    }

    [Fact]
    public void Router_TopKIsDescendingWithTiesToTheLowerExpert()
    {
        float[] logits = [0f, 2f, 1f, 2f, /* token 1 */ 5f, 5f, 5f, 5f];
        var (w, sel) = (new float[4], new int[4]);
        Moe.RouterForwardCpu<float>(logits, 4, 2, normalize: false, w, sel);
        Assert.Equal([1, 3, 0, 1], sel);
        float e2 = MathF.Exp(2f), denom = 1f + 2f * e2 + MathF.Exp(1f);
        Assert.Equal(e2 / denom, w[0], 1e-6f);
        Assert.Equal(0.25f, w[2], 1e-6f);
        Moe.RouterForwardCpu<float>(logits, 4, 2, normalize: true, w, sel);
        Assert.Equal([0.5f, 0.5f, 0.5f, 0.5f], w);
    }

    [Fact]
    public void Sort_IsStableAndGroupsByExpert()
    {
        int[] experts = [2, 0, 2, 1, 0, 2];
        var (counts, order) = (new int[3], new int[6]);
        Moe.SortCpu(experts, 3, counts, order);
        Assert.Equal([2, 1, 3], counts);
        Assert.Equal([1, 4, 3, 0, 2, 5], order);
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        // Router (both normalisations), combine (weights and expert outputs) and the aux-loss softmax term, in fp64.
        var shapes = from tokens in Gen.Choose(1, 4) from experts in Gen.Choose(2, 5) from k in Gen.Choose(1, 2)
                     from normalize in Gen.Elements(false, true) from hidden in Gen.Choose(1, 3) from seed in Gen.Choose(0, 10000)
                     select (tokens, experts, topK: Math.Min(k, experts), normalize, hidden, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (tokens, experts, topK, normalize, hidden, seed) = s;
            var logits = Rand.Doubles(seed, tokens * experts, 2);
            var g = Rand.Doubles(seed + 1, tokens * topK);
            var (w, sel) = (new double[g.Length], new int[g.Length]);
            Moe.RouterForwardCpu<double>(logits, experts, topK, normalize, w, sel);
            // Nearly tied logits flip the top-k under the finite-difference step: the selection is locally constant only away from ties.
            if (!SelectionStable(logits, experts, topK)) return;
            double RouterLoss(double[] l)
            {
                var (ww, ss) = (new double[g.Length], new int[g.Length]);
                Moe.RouterForwardCpu<double>(l, experts, topK, normalize, ww, ss);
                return ww.Select((v, i) => v * g[i]).Sum();
            }
            var dLogits = new double[logits.Length];
            Moe.RouterBackwardCpu<double>(g, logits, sel, experts, topK, normalize, dLogits);
            FiniteDifference.Check("router dLogits", logits, dLogits, RouterLoss);

            var (counts, order) = (new int[experts], new int[sel.Length]);
            Moe.SortCpu(sel, experts, counts, order);
            var ye = Rand.Doubles(seed + 2, sel.Length * hidden);
            var dY = Rand.Doubles(seed + 3, tokens * hidden);
            double CombineLoss(double[] ww, double[] yy)
            {
                var y = new double[tokens * hidden];
                for (int e = 0, off = 0; e < experts; off += counts[e++])
                    Moe.CombineCpu<double>(yy.AsSpan(off * hidden, counts[e] * hidden), ww, order, off, topK, hidden, y);
                return y.Select((v, i) => v * dY[i]).Sum();
            }
            var (dYe, dW) = (new double[ye.Length], new double[w.Length]);
            for (int e = 0, off = 0; e < experts; off += counts[e++])
                Moe.CombineBackwardCpu<double>(dY, ye.AsSpan(off * hidden, counts[e] * hidden), w, order, off, topK, hidden,
                    dYe.AsSpan(off * hidden, counts[e] * hidden), dW);
            FiniteDifference.Check("combine dWeights", w, dW, ww => CombineLoss(ww, ye));
            FiniteDifference.Check("combine dYe", ye, dYe, yy => CombineLoss(w, yy));

            var grad = Rand.Doubles(seed + 4, experts);
            var mask = Enumerable.Range(0, tokens).Select(t => t == 0 ? 1.0 : (t + seed) % 2).ToArray();
            double AuxLoss(double[] l)
            {
                var (c, p) = (new double[experts], new double[experts]);
                Moe.AuxStatsCpu<double>(l, sel, mask, experts, topK, c, p);
                return p.Select((v, i) => v * grad[i]).Sum();
            }
            var auxD = new double[logits.Length];
            Moe.AuxBackwardCpu<double>(logits, mask, grad, experts, auxD);
            FiniteDifference.Check("aux dLogits", logits, auxD, AuxLoss);
        });
    }

    static bool SelectionStable(double[] logits, int experts, int topK)
    {
        for (int t = 0; t < logits.Length / experts; t++)
        {
            var row = logits.AsSpan(t * experts, experts).ToArray();
            Array.Sort(row);
            Array.Reverse(row);
            if (topK < experts && row[topK - 1] - row[topK] < 1e-3) return false;
        }
        return true;
    }
}
