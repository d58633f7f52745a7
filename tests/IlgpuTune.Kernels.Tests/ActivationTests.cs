using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class ActivationTests(IlgpuCpuFixture gpu)
{
    static readonly float[] Extremes = [-1000f, -100f, -88.8f, -80f, -20f, -1e-30f, 0f, 1e-30f, 20f, 80f, 88.8f, 100f, 1000f];

    [Theory]
    [InlineData(1, 3f)]
    [InlineData(37, 8f)]
    [InlineData(700, 4f)]
    [InlineData(0, 0f)] // only the extreme values
    [InlineData(3, 2f)] // n % 4 == 0: Float4 quads only, no tail
    [InlineData(2, 2f)] // a 3-element tail
    public void Kernels_MatchCpuReference(int n, float scale)
    {
        var x = Rand.Floats(1, n, scale).Concat(Extremes).ToArray();
        n = x.Length;
        var up = Rand.Floats(2, n, 2f);
        var dY = Rand.Floats(3, n);
        using var gx = gpu.Upload(x); using var gup = gpu.Upload(up); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Zeros(n); using var gdX = gpu.Zeros(n);
        using var gsw = gpu.Zeros(n); using var gdGate = gpu.Zeros(n); using var gdUp = gpu.Zeros(n);

        Activation.SiluForward(gpu.Kernels, gx.View, n, gy.View);
        Activation.SiluBackward(gpu.Kernels, gdY.View, gx.View, n, gdX.View);
        Activation.SwiGluForward(gpu.Kernels, gx.View, gup.View, n, gsw.View);
        Activation.SwiGluBackward(gpu.Kernels, gdY.View, gx.View, gup.View, n, gdGate.View, gdUp.View);
        gpu.Accelerator.Synchronize();

        var y = new float[n]; var dX = new float[n]; var sw = new float[n]; var dGate = new float[n]; var dUp = new float[n];
        Activation.SiluForwardCpu<float>(x, y);
        Activation.SiluBackwardCpu<float>(dY, x, dX);
        Activation.SwiGluForwardCpu<float>(x, up, sw);
        Activation.SwiGluBackwardCpu<float>(dY, x, up, dGate, dUp);
        foreach (var v in y.Concat(dX).Concat(sw).Concat(dGate).Concat(dUp)) Assert.True(float.IsFinite(v));

        Close.Assert("silu", y, gy.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dX", dX, gdX.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("swiglu", sw, gsw.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dGate", dGate, gdGate.GetAsArray1D(), 1e-6, 1e-5);
        Close.Assert("dUp", dUp, gdUp.GetAsArray1D(), 1e-6, 1e-5);
    }

    [Theory]
    [InlineData(1)] // views off a 16-byte boundary: scalar path
    [InlineData(4)] // 16-byte aligned sub-views: Float4 path
    public void SwiGlu_OnSubViews_MatchesCpuReference_WithDUpAliasingUp(int offset)
    {
        int n = 45;
        var gate = Rand.Floats(1, n, 6f);
        var up = Rand.Floats(2, n, 2f);
        var dY = Rand.Floats(3, n);
        var sw = new float[n]; var dGate = new float[n]; var dUp = new float[n];
        Activation.SwiGluForwardCpu<float>(gate, up, sw);
        Activation.SwiGluBackwardCpu<float>(dY, gate, up, dGate, dUp);

        float[] Pad(float[] a) => new float[offset].Concat(a).ToArray();
        using var ggate = gpu.Upload(Pad(gate)); using var gup = gpu.Upload(Pad(up)); using var gdY = gpu.Upload(Pad(dY));
        using var gsw = gpu.Zeros(offset + n); using var gdGate = gpu.Zeros(offset + n);
        ILGPU.ArrayView<float> V(MemoryBuffer1D<float, ILGPU.Stride1D.Dense> b) => b.View.SubView(offset, n);
        Activation.SwiGluForward(gpu.Kernels, V(ggate), V(gup), n, V(gsw));
        Activation.SwiGluBackward(gpu.Kernels, V(gdY), V(ggate), V(gup), n, V(gdGate), V(gup)); // dUp overwrites up
        gpu.Accelerator.Synchronize();

        Close.Assert("swiglu", sw, gsw.GetAsArray1D()[offset..], 1e-6, 1e-5);
        Close.Assert("dGate", dGate, gdGate.GetAsArray1D()[offset..], 1e-6, 1e-5);
        Close.Assert("dUp", dUp, gup.GetAsArray1D()[offset..], 1e-6, 1e-5);
    }

    [Fact]
    public void CpuReference_HasTheLimitsAtLargeInputs()
    {
        var x = new[] { -80f, 80f, -1000f, 1000f };
        var y = new float[4]; var dX = new float[4];
        Activation.SiluForwardCpu<float>(x, y);
        Activation.SiluBackwardCpu<float>([1f, 1f, 1f, 1f], x, dX);
        Assert.Equal([-80f * MathF.Exp(-80f), 80f, -0f, 1000f], y, (a, b) => Math.Abs(a - b) <= 1e-6f * Math.Abs(b) + 1e-40f);
        Assert.Equal([-79f * MathF.Exp(-80f), 1f, 0f, 1f], dX, (a, b) => Math.Abs(a - b) <= 1e-6f * Math.Abs(b) + 1e-40f);
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var cases = from n in Gen.Choose(1, 9) from seed in Gen.Choose(0, 10000) select (n, seed);
        return Prop.ForAll(cases.ToArbitrary(), s =>
        {
            var (n, seed) = s;
            var x = Rand.Doubles(seed, n, 6);
            var up = Rand.Doubles(seed + 1, n, 2);
            var g = Rand.Doubles(seed + 2, n);
            double Loss(Action<double[]> forward)
            {
                var y = new double[n];
                forward(y);
                double l = 0;
                for (int i = 0; i < n; i++) l += g[i] * y[i];
                return l;
            }
            var dX = new double[n];
            Activation.SiluBackwardCpu<double>(g, x, dX);
            FiniteDifference.Check("silu dX", x, dX, xx => Loss(y => Activation.SiluForwardCpu<double>(xx, y)));

            var dGate = new double[n]; var dUp = new double[n];
            Activation.SwiGluBackwardCpu<double>(g, x, up, dGate, dUp);
            FiniteDifference.Check("dGate", x, dGate, xx => Loss(y => Activation.SwiGluForwardCpu<double>(xx, up, y)));
            FiniteDifference.Check("dUp", up, dUp, uu => Loss(y => Activation.SwiGluForwardCpu<double>(x, uu, y)));
        });
    }
}
