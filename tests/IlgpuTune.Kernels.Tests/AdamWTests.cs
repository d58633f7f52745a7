using FsCheck;
using ILGPU;
using ILGPU.Runtime;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class AdamWTests(IlgpuCpuFixture gpu)
{
    // ILGPU cannot allocate zero elements: empty tensors get a one-element buffer and an empty view of it.
    private MemoryBuffer1D<float, Stride1D.Dense> Up(float[] a) => a.Length == 0 ? gpu.Zeros(1) : gpu.Upload(a);

    private static AdamWStep Hyper(long step, double wd = 0.01, double lr = 1e-3) => new(lr, 0.9, 0.999, 1e-8, wd, step);

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100)]
    [InlineData(333)]
    public void Step_Kernel_MatchesCpuReference_OverSeveralSteps(int n)
    {
        var p = Rand.Floats(1, n); var m = new float[n]; var v = new float[n];
        using var gp = gpu.Upload(p); using var gm = gpu.Zeros(n); using var gv = gpu.Zeros(n);
        for (int t = 1; t <= 4; t++)
        {
            var g = Rand.Floats(10 + t, n, 3f);
            var h = Hyper(t, wd: 0.1, lr: 0.05);
            AdamW.StepCpu<float>(g, h, p, m, v);
            using var gg = gpu.Upload(g);
            AdamW.Step(gpu.Kernels, gg.View, n, h, gp.View, gm.View, gv.View);
        }
        gpu.Accelerator.Synchronize();
        Close.Assert("param", p, gp.GetAsArray1D().AsSpan(0, n), 1e-7, 1e-6);
        Close.Assert("exp_avg", m, gm.GetAsArray1D().AsSpan(0, n), 1e-7, 1e-6);
        Close.Assert("exp_avg_sq", v, gv.GetAsArray1D().AsSpan(0, n), 1e-9, 1e-6);
    }

    [Fact]
    public void StepMulti_OneLaunchPerPack_MatchesCpuReferencePerTensor()
    {
        // 11 tensors (two packs, the second part-filled), odd sizes and an empty one.
        int[] sizes = [5, 1, 0, 33, 64, 7, 2, 19, 40, 3, 9];
        var ps = sizes.Select((n, i) => Rand.Floats(100 + i, n)).ToArray();
        var gs = sizes.Select((n, i) => Rand.Floats(200 + i, n, 2f)).ToArray();
        var ms = sizes.Select((n, i) => Rand.Floats(300 + i, n, 0.1f)).ToArray();
        var vs = sizes.Select((n, i) => Rand.Floats(400 + i, n, 0.1f).Select(MathF.Abs).ToArray()).ToArray();
        var bufs = sizes.Select((n, i) => (P: Up(ps[i]), G: Up(gs[i]), M: Up(ms[i]), V: Up(vs[i]))).ToArray();
        var h = Hyper(3, wd: 0.05, lr: 0.01);
        int loadedBefore = gpu.Kernels.LoadedCount;
        AdamW.StepMulti(gpu.Kernels, bufs.Select((b, i) => new AdamWTensor(
            b.P.View.SubView(0, sizes[i]).AsContiguous(), b.G.View.SubView(0, sizes[i]).AsContiguous(), b.M.View, b.V.View)).ToList(), h);
        gpu.Accelerator.Synchronize();
        for (int i = 0; i < sizes.Length; i++)
        {
            AdamW.StepCpu<float>(gs[i], h, ps[i], ms[i], vs[i]);
            Close.Assert($"param[{i}]", ps[i], bufs[i].P.GetAsArray1D().AsSpan(0, sizes[i]), 1e-7, 1e-6);
            Close.Assert($"exp_avg[{i}]", ms[i], bufs[i].M.GetAsArray1D().AsSpan(0, sizes[i]), 1e-7, 1e-6);
            Close.Assert($"exp_avg_sq[{i}]", vs[i], bufs[i].V.GetAsArray1D().AsSpan(0, sizes[i]), 1e-9, 1e-6);
            bufs[i].P.Dispose(); bufs[i].G.Dispose(); bufs[i].M.Dispose(); bufs[i].V.Dispose();
        }
        Assert.True(gpu.Kernels.LoadedCount - loadedBefore <= 1);
    }

    [Fact]
    public void StepCpu_MatchesHandDerivedValues()
    {
        // One scalar, lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.1, p0 = 1, grads 1, -2, 0.5, 0, 3.
        // Step 1 by hand: p = 1*(1 - 0.01) = 0.99; m = 0.1*1 = 0.1; v = 0.001*1 = 0.001; bc1 = 0.1, bc2 = 0.001, so
        // m/bc1 = 1, sqrt(v)/sqrt(bc2) = 1 and p = 0.99 - 0.1*1/(1 + 1e-8) = 0.890000001 (to 1e-17).
        // Step 2: p = 0.890000001*0.99; m = 0.1 + 0.1*(-2 - 0.1) = -0.11; v = 0.001*0.999 + 0.001*4 = 0.004999;
        // bc1 = 0.19, bc2 = 0.001999; p -= (0.1/0.19) * -0.11 / (sqrt(0.004999)/sqrt(0.001999) + 1e-8).
        // Later steps follow the same formulas; all values below are those formulas evaluated at 50 digits.
        double[] grads = [1, -2, 0.5, 0, 3];
        double[] wantP = [0.89000000099999999, 0.91771035346207509, 0.92220231612920097, 0.92417716025048205, 0.87729787597409254];
        double[] wantM = [0.1, -0.11, -0.049, -0.0441, 0.26031];
        double[] wantV = [0.001, 0.004999, 0.005244001, 0.005238756999, 0.014233518242001];
        double[] p = [1], m = [0], v = [0];
        for (int t = 1; t <= grads.Length; t++)
        {
            AdamW.StepCpu<double>([grads[t - 1]], new AdamWStep(0.1, 0.9, 0.999, 1e-8, 0.1, t), p, m, v);
            Assert.Equal(wantP[t - 1], p[0], 1e-14);
            Assert.Equal(wantM[t - 1], m[0], 1e-15);
            Assert.Equal(wantV[t - 1], v[0], 1e-16);
        }
    }

    [Fact]
    public void StepCpu_ConstantGradient_MovesByLrTimesSign()
    {
        // With a constant g, m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2 exactly, so every step is
        // p = p*(1 - lr*wd) - lr*g/(|g| + eps): from p0 = 1, g = 0.5, lr = 1e-3, wd = 0.01 the first step gives
        // 0.99999 - 0.001*0.5/0.50000001 = 0.99899000002.
        double[] p = [1], m = [0], v = [0];
        double want = 1;
        for (int t = 1; t <= 6; t++)
        {
            AdamW.StepCpu<double>([0.5], Hyper(t), p, m, v);
            want = want * (1 - 1e-5) - 1e-3 * 0.5 / (0.5 + 1e-8);
            if (t == 1) Assert.Equal(0.99899000002, p[0], 1e-15);
            Assert.Equal(want, p[0], 1e-14);
        }
    }

    [Property(MaxTest = 50)]
    public Property StepCpu_MatchesScalarFormula_AtRandomHyperparameters()
    {
        var cases = from n in Gen.Choose(1, 9) from steps in Gen.Choose(1, 6) from seed in Gen.Choose(0, 10000)
                    from wdPct in Gen.Choose(0, 30) select (n, steps, seed, wd: wdPct / 100.0);
        return Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var p = Rand.Doubles(c.seed, c.n); var m = new double[c.n]; var v = new double[c.n];
            var sp = (double[])p.Clone(); var sm = new double[c.n]; var sv = new double[c.n];
            const double lr = 0.02, b1 = 0.8, b2 = 0.95, eps = 1e-6;
            for (int t = 1; t <= c.steps; t++)
            {
                var g = Rand.Doubles(c.seed + t, c.n, 4);
                AdamW.StepCpu<double>(g, new AdamWStep(lr, b1, b2, eps, c.wd, t), p, m, v);
                for (int i = 0; i < c.n; i++)
                {
                    sp[i] *= 1 - lr * c.wd;
                    sm[i] = b1 * sm[i] + (1 - b1) * g[i];
                    sv[i] = b2 * sv[i] + (1 - b2) * g[i] * g[i];
                    double mHat = sm[i] / (1 - Math.Pow(b1, t)), vHat = sv[i] / (1 - Math.Pow(b2, t));
                    sp[i] -= lr * mHat / (Math.Sqrt(vHat) + eps); // the textbook form: eps after bias correction
                }
            }
            for (int i = 0; i < c.n; i++)
            {
                Assert.Equal(sp[i], p[i], 1e-12);
                Assert.Equal(sm[i], m[i], 1e-12);
                Assert.Equal(sv[i], v[i], 1e-12);
            }
        });
    }

    [Fact]
    public void Unscale_ScalesEveryGrad_AndFlagsNonFinite()
    {
        int[] sizes = [4, 0, 37, 9, 1, 2, 3, 5, 6, 70];
        var gs = sizes.Select((n, i) => Rand.Floats(500 + i, n, 100f)).ToArray();
        gs[3][2] = float.PositiveInfinity;
        gs[9][69] = float.NaN;
        foreach (var (poison, wantFlag) in new[] { (true, true), (false, false) })
        {
            var host = gs.Select(g => (float[])g.Clone()).ToArray();
            if (!poison) { host[3][2] = 1f; host[9][69] = 2f; }
            var dev = host.Select(Up).ToArray();
            using var flag = gpu.Zeros(1);
            float inv = (float)(1.0 / 65536.0);
            AdamW.Unscale(gpu.Kernels, dev.Select((b, i) => b.View.SubView(0, sizes[i]).AsContiguous()).ToList(), inv, flag.View);
            gpu.Accelerator.Synchronize();
            bool cpuFlag = false;
            for (int i = 0; i < sizes.Length; i++)
            {
                cpuFlag |= AdamW.UnscaleCpu<float>(host[i], inv);
                Assert.Equal(host[i], dev[i].GetAsArray1D().AsSpan(0, sizes[i]).ToArray()); // exact, inf and NaN included
                dev[i].Dispose();
            }
            Assert.Equal(wantFlag, cpuFlag);
            Assert.Equal(wantFlag ? 1f : 0f, flag.GetAsArray1D()[0]);
        }
    }

    [Fact]
    public void SumOfSquares_PartialsAddUpToEachTensorsSum()
    {
        int[] sizes = [0, 3, 200, 1, 31, 64, 8, 17, 90];
        var xs = sizes.Select((n, i) => Rand.Floats(600 + i, n, 2f)).ToArray();
        var dev = xs.Select(Up).ToArray();
        int per = AdamW.PartialsPerTensor(gpu.Kernels);
        using var partials = gpu.Zeros(sizes.Length * per + 1);
        partials.View.SubView(sizes.Length * per, 1).CopyFromCPU([-7f]);
        AdamW.SumOfSquares(gpu.Kernels, dev.Select((b, i) => b.View.SubView(0, sizes[i]).AsContiguous()).ToList(), partials.View);
        gpu.Accelerator.Synchronize();
        var got = partials.GetAsArray1D();
        for (int i = 0; i < sizes.Length; i++)
        {
            double sum = 0;
            for (int g = 0; g < per; g++) sum += got[i * per + g];
            double want = AdamW.SumOfSquaresCpu<double>(xs[i].Select(x => (double)x).ToArray());
            Assert.Equal(want, sum, Math.Max(1e-9, want * 1e-6));
            dev[i].Dispose();
        }
        Assert.Equal(-7f, got[sizes.Length * per]); // nothing written past the last tensor's partials
    }
}
