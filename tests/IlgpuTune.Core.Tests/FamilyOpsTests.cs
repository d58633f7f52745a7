using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>The #16 ops through Ops and both backends: a sparse MoE MLP against a dense fp64 evaluation of the same block,
/// transformers' load_balancing_loss_func, Gemma's (1 + w) norm, and windowed / rescaled attention on the ILGPU device.</summary>
public class FamilyOpsTests
{
    const int T = 7, H = 4, I = 3, E = 4, K = 2;

    // Router, experts and the aux loss of two layers (the second reuses the first's experts on other logits); returns y, aux loss
    // and the gradients of sum(g * y) + 0.5 * aux with respect to x, the router weight and expert 1's gate weight.
    static (float[] Y, float Aux, float[] DX, float[] DRouter, float[] DGate1) RunMoe(string device, bool normalize, float[]? mask)
    {
        using var d = Device.Create(device);
        using var x = Tensor.FromArray(d, Rand.Floats(1, T * H), T, H);
        using var router = Tensor.FromArray(d, Rand.Floats(2, E * H, 2f), E, H);
        using var router2 = Tensor.FromArray(d, Rand.Floats(3, E * H, 2f), E, H);
        var gate = Enumerable.Range(0, E).Select(e => Tensor.FromArray(d, Rand.Floats(10 + e, I * H), I, H)).ToArray();
        var up = Enumerable.Range(0, E).Select(e => Tensor.FromArray(d, Rand.Floats(20 + e, I * H), I, H)).ToArray();
        var down = Enumerable.Range(0, E).Select(e => Tensor.FromArray(d, Rand.Floats(30 + e, H * I), H, I)).ToArray();
        using var m = mask is null ? null : Tensor.FromArray(d, mask, T);
        x.RequiresGrad = router.RequiresGrad = gate[1].RequiresGrad = true;
        try
        {
            float[] yv;
            float auxV;
            using var g = Tensor.FromArray(d, Rand.Floats(40, T * H), T, H);
            using (var tape = new Tape())
            {
                using var logits = Ops.Linear(x, router);
                using var routing = Ops.MoeRoute(logits, K, normalize);
                using var y = Ops.MoeExperts(x, routing, (e, xe) =>
                {
                    using var gt = Ops.Linear(xe, gate[e]);
                    using var u = Ops.Linear(xe, up[e]);
                    using var a = Ops.SwiGlu(gt, u);
                    return Ops.Linear(a, down[e]);
                });
                yv = y.ToFloatArray();
                tape.Backward(y, g.Clone());
            }
            using (var tape = new Tape()) // gradients add up on the leaves
            {
                using var logits = Ops.Linear(x, router);
                using var logits2 = Ops.Linear(x, router2);
                using var routing = Ops.MoeRoute(logits, K, normalize);
                using var routing2 = Ops.MoeRoute(logits2, K, normalize);
                using var aux = Ops.MoeLoadBalancingLoss([logits, logits2], [routing, routing2], m);
                auxV = aux.Item();
                using var scaled = Ops.Scale(aux, 0.5f);
                tape.Backward(scaled);
            }
            return (yv, auxV, x.Grad!.ToFloatArray(), router.Grad!.ToFloatArray(), gate[1].Grad!.ToFloatArray());
        }
        finally
        {
            foreach (var t in gate.Concat(up).Concat(down)) t.Dispose();
        }
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void MoeBlock_MatchesDenseEvaluation_AndBackendsAgree(bool normalize, bool masked)
    {
        float[]? mask = masked ? [1, 1, 1, 0, 1, 1, 0] : null;
        var cpu = RunMoe("cpu", normalize, mask);
        var emu = RunMoe("ilgpu-cpu", normalize, mask);

        // Dense fp64: every token through its top-k experts, weighted.
        var x = Rand.Floats(1, T * H);
        var r1 = Rand.Floats(2, E * H, 2f);
        var r2 = Rand.Floats(3, E * H, 2f);
        var y = new double[T * H];
        var probs = new double[2][];
        var chosen = new int[2][];
        for (int layer = 0; layer < 2; layer++)
        {
            var r = layer == 0 ? r1 : r2;
            probs[layer] = new double[T * E];
            chosen[layer] = new int[T * K];
            for (int t = 0; t < T; t++)
            {
                var l = Enumerable.Range(0, E).Select(e => Enumerable.Range(0, H).Sum(h => (double)x[t * H + h] * r[e * H + h])).ToArray();
                double mx = l.Max(), z = l.Sum(v => Math.Exp(v - mx));
                var p = l.Select(v => Math.Exp(v - mx) / z).ToArray();
                p.CopyTo(probs[layer], t * E);
                var top = Enumerable.Range(0, E).OrderByDescending(e => p[e]).ThenBy(e => e).Take(K).ToArray();
                top.CopyTo(chosen[layer], t * K);
                if (layer != 0) continue;
                double s = normalize ? top.Sum(e => p[e]) : 1;
                foreach (int e in top)
                {
                    var (g, u, dn) = (Rand.Floats(10 + e, I * H), Rand.Floats(20 + e, I * H), Rand.Floats(30 + e, H * I));
                    var a = new double[I];
                    for (int i = 0; i < I; i++)
                    {
                        double gi = 0, ui = 0;
                        for (int h = 0; h < H; h++) { gi += x[t * H + h] * g[i * H + h]; ui += x[t * H + h] * u[i * H + h]; }
                        a[i] = gi / (1 + Math.Exp(-gi)) * ui;
                    }
                    for (int h = 0; h < H; h++)
                        for (int i = 0; i < I; i++) y[t * H + h] += p[e] / s * dn[h * I + i] * a[i];
                }
            }
        }
        Close.Assert("y", y.Select(v => (float)v).ToArray(), cpu.Y, 1e-5, 1e-4);

        // load_balancing_loss_func: concatenated layers, one-hot of the top-k, masked means, E * sum(tokens_per_expert * router_prob).
        double den = 0;
        var f = new double[K, E];
        var pe = new double[E];
        for (int layer = 0; layer < 2; layer++)
            for (int t = 0; t < T; t++)
            {
                double mt = mask?[t] ?? 1;
                den += mt;
                for (int k = 0; k < K; k++) f[k, chosen[layer][t * K + k]] += mt;
                for (int e = 0; e < E; e++) pe[e] += mt * probs[layer][t * E + e];
            }
        double aux = 0;
        for (int k = 0; k < K; k++)
            for (int e = 0; e < E; e++) aux += f[k, e] / den * (pe[e] / den);
        aux *= E;
        Assert.Equal(aux, cpu.Aux, 1e-5);

        Close.Assert("y (ilgpu)", cpu.Y, emu.Y, 1e-5, 1e-4);
        Assert.Equal(cpu.Aux, emu.Aux, 1e-5f);
        Close.Assert("dX", cpu.DX, emu.DX, 1e-5, 1e-4);
        Close.Assert("dRouter", cpu.DRouter, emu.DRouter, 1e-5, 1e-4);
        Close.Assert("dGate[1]", cpu.DGate1, emu.DGate1, 1e-5, 1e-4);
        Assert.Contains(cpu.DRouter, v => v != 0f);
    }

    [Fact]
    public void MoeDispatch_GradientEqualsPerExpertGathers()
    {
        // One dispatch entry (one dX) against one MoeGather entry per expert (E gradients summed by the tape).
        using var d = Device.Create("cpu");
        using var x = Tensor.FromArray(d, Rand.Floats(1, T * H), T, H);
        using var logits = Tensor.FromArray(d, Rand.Floats(2, T * E, 3f), T, E);
        x.RequiresGrad = true;
        using var routing = Ops.MoeRoute(logits, K, true);
        float[] Grad(bool dispatch)
        {
            using (var tape = new Tape())
            {
                var parts = dispatch ? Ops.MoeDispatch(x, routing)
                    : Enumerable.Range(0, E).Select(e => routing.Counts[e] == 0 ? null : Ops.MoeGather(x, routing, e)).ToArray();
                using var y = Ops.MoeCombine(parts, routing);
                tape.Backward(y, Tensor.FromArray(d, Rand.Floats(3, T * H), T, H));
                foreach (var p in parts) p?.Dispose();
            }
            var g = x.Grad!.ToFloatArray();
            x.Grad!.Dispose();
            x.Grad = null;
            return g;
        }
        Assert.Equal(Grad(false), Grad(true));
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("ilgpu-cpu")]
    public void GemmaNorm_IsRmsNormTimesOnePlusWeight(string device)
    {
        using var d = Device.Create(device);
        var w = Rand.Floats(2, 6);
        using var x = Tensor.FromArray(d, Rand.Floats(1, 18, 2f), 3, 6);
        using var weight = Tensor.FromArray(d, w, 6);
        using var onePlus = Tensor.FromArray(d, w.Select(v => 1f + v).ToArray(), 6);
        weight.RequiresGrad = onePlus.RequiresGrad = true;
        var g = Rand.Floats(3, 18);
        float[] Run(Tensor wt, bool unit)
        {
            using var tape = new Tape();
            using var y = Ops.RmsNorm(x, wt, 1e-6f, unit);
            var v = y.ToFloatArray();
            tape.Backward(y, Tensor.FromArray(d, g, 3, 6));
            return v;
        }
        Assert.Equal(Run(onePlus, false), Run(weight, true));
        Assert.Equal(onePlus.Grad!.ToFloatArray(), weight.Grad!.ToFloatArray());
    }

    [Theory]
    [InlineData(DType.F32, 16, 5, null, 0)]
    [InlineData(DType.BF16, 16, 5, 0.3f, 2e-2)] // tensor cores: inputs rounded to bf16, P rounded inside
    [InlineData(DType.BF16, 256, 4, 0.0625f, 0)] // Gemma 3's head dim runs the fp32 flash kernels at any precision
    public void Attention_WindowAndScale_OnTheIlgpuDevice_MatchTheReference(DType precision, int hd, int window, float? scale, double halfTol)
    {
        using var d = Device.Create("ilgpu-cpu");
        d.Precision = Precision.Of(precision);
        const int seq = 11, heads = 2, kvHeads = 1;
        float[] R(float[] a) => halfTol == 0 ? a : a.Select(x => HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(x))).ToArray();
        var (qd, kd, vd, gd) = (R(Rand.Floats(1, seq * heads * hd, 2f)), R(Rand.Floats(2, seq * kvHeads * hd, 2f)),
            R(Rand.Floats(3, seq * kvHeads * hd)), R(Rand.Floats(4, seq * heads * hd)));
        using var q = Tensor.FromArray(d, qd, seq, heads * hd);
        using var k = Tensor.FromArray(d, kd, seq, kvHeads * hd);
        using var v = Tensor.FromArray(d, vd, seq, kvHeads * hd);
        q.RequiresGrad = k.RequiresGrad = v.RequiresGrad = true;
        float[] o;
        using (var tape = new Tape())
        {
            using var ot = Ops.Attention(q, k, v, null, new AttentionShape(1, seq, heads, kvHeads, hd, window, scale));
            o = ot.ToFloatArray();
            tape.Backward(ot, Tensor.FromArray(d, gd, seq, heads * hd));
        }
        var sizes = new Attention.Sizes(1, seq, heads, kvHeads, hd, Window: window, Scale: scale);
        var (oRef, dQ, dK, dV) = (new float[o.Length], new float[qd.Length], new float[kd.Length], new float[vd.Length]);
        Attention.ForwardCpu<float>(qd, kd, vd, [], sizes, oRef, []);
        Attention.BackwardCpu<float>(gd, qd, kd, vd, [], sizes, dQ, dK, dV);
        foreach (var (name, want, got) in new[] { ("o", oRef, o), ("dQ", dQ, q.Grad!.ToFloatArray()), ("dK", dK, k.Grad!.ToFloatArray()),
                     ("dV", dV, v.Grad!.ToFloatArray()) })
            if (halfTol == 0) Close.Assert(name, want, got, 1e-5, 1e-4);
            else Assert.True(Close.RelativeToMax(want, got) <= halfTol, $"{name}: {Close.RelativeToMax(want, got):G3} of max |expected|");
    }
}
