using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Training.Tests;

[Collection(DevicesCollection.Name)]
public class ScalerAndClipTests(Devices devices)
{
    private static Tensor WithGrad(Device d, string name, float[] grad)
    {
        var p = Tensor.Zeros(d, DType.F32, grad.Length).Named(name);
        p.Grad = Tensor.FromArray(d, grad, grad.Length);
        return p;
    }

    [Fact]
    public void Scaler_GrowsAfterTheIntervalBacksOffOnInfAndSkipsThatStep()
    {
        var d = devices.Get("cpu");
        using var p = WithGrad(d, "w", [1f]);
        using var opt = new AdamW([p], lr: 0.1, weightDecay: 0);
        var scaler = new GradScaler(growthInterval: 3);
        Assert.Equal(65536f, scaler.Scale);
        var seen = new List<(float Scale, int Tracker, bool Stepped)>();
        float[][] grads = [[65536f], [65536f], [float.PositiveInfinity], [32768f], [32768f], [32768f], [float.NaN]];
        foreach (var g in grads)
        {
            p.Grad!.CopyFrom(g);
            bool stepped = scaler.Step(opt); // unscales itself when Unscale was not called
            scaler.Update();
            seen.Add((scaler.Scale, scaler.GrowthTracker, stepped));
        }
        Assert.Equal([(65536f, 1, true), (65536f, 2, true), (32768f, 0, false), (32768f, 1, true), (32768f, 2, true),
            (65536f, 0, true), (32768f, 0, false)], seen);
        Assert.Equal(5, opt.StepOf(0));
    }

    [Fact]
    public void Scaler_DoesNotGrowPastFloatMax_AndRoundTripsItsState()
    {
        var d = devices.Get("cpu");
        using var p = WithGrad(d, "w", [0f]);
        using var opt = new AdamW([p]);
        var scaler = new GradScaler(initScale: Math.Pow(2, 127), growthInterval: 1);
        scaler.Unscale(opt);
        scaler.Step(opt);
        scaler.Update();
        Assert.Equal(MathF.Pow(2, 127), scaler.Scale); // 2^128 is inf in fp32: kept
        Assert.Equal(0, scaler.GrowthTracker);
        var restored = new GradScaler();
        restored.LoadState(scaler.ExportState());
        Assert.Equal(scaler.ExportState(), restored.ExportState());
    }

    [Fact]
    public void Scaler_RefusesOutOfOrderCalls_AndIsAPassThroughWhenDisabled()
    {
        var d = devices.Get("cpu");
        using var p = WithGrad(d, "w", [2f]);
        using var opt = new AdamW([p]);
        var scaler = new GradScaler();
        Assert.Throws<InvalidOperationException>(scaler.Update);
        scaler.Unscale(opt);
        Assert.Throws<InvalidOperationException>(() => scaler.Unscale(opt));
        var off = new GradScaler(enabled: false);
        Assert.Equal(1f, off.Scale);
        p.Grad!.CopyFrom([2f]);
        Assert.False(off.Unscale(opt));
        Assert.Equal([2f], p.Grad.ToFloatArray());
        Assert.True(off.Step(opt));
        off.Update();
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("ilgpu-cpu")]
    public void Unscale_OnEachDevice_ScalesByTheFloatReciprocalAndFlags(string kind)
    {
        var d = devices.Get(kind);
        using var a = WithGrad(d, "a", [65536f, -3f, 1e-3f]);
        using var b = WithGrad(d, "b", [float.NegativeInfinity, 5f]);
        using var opt = new AdamW([a, b]);
        var scaler = new GradScaler(initScale: 3.0);
        Assert.True(scaler.Unscale(opt));
        float inv = (float)(1.0 / 3.0);
        Assert.Equal([65536f * inv, -3f * inv, 1e-3f * inv], a.Grad!.ToFloatArray());
        Assert.Equal([float.NegativeInfinity, 5f * inv], b.Grad!.ToFloatArray());
        Assert.False(scaler.Step(opt));
    }

    [Theory]
    [InlineData("cpu", 1f)]
    [InlineData("ilgpu-cpu", 1f)]
    [InlineData("cpu", 100f)]
    [InlineData("ilgpu-cpu", 100f)]
    public void ClipGradNorm_ReturnsThePreClipNorm_AndScalesByTorchsCoefficient(string kind, float maxNorm)
    {
        var d = devices.Get(kind);
        float[][] gs = [Rand.Floats(1, 37, 2f), Rand.Floats(2, 5, 2f), Rand.Floats(3, 130, 2f)];
        var ps = gs.Select((g, i) => WithGrad(d, $"p{i}", g)).ToList();
        using var noGrad = Tensor.Zeros(d, DType.F32, 4).Named("frozen");
        double sum = 0;
        foreach (var g in gs) sum += g.Sum(x => (double)x * x);
        double total = Math.Sqrt(sum);
        float got = GradClipping.ClipGradNorm(ps.Append(noGrad), maxNorm);
        Assert.Equal(total, got, total * 1e-6);
        float coef = MathF.Min(1f / (got + 1e-6f) * maxNorm, 1f);
        for (int i = 0; i < gs.Length; i++)
            Close.Assert($"grad {i}", gs[i].Select(x => x * coef).ToArray(), ps[i].Grad!.ToFloatArray(), 0, 0);
        if (maxNorm < total) Assert.Equal(maxNorm, GradClipping.GradNorm(ps), 1e-5);
        foreach (var p in ps) p.Dispose();
        Assert.Equal(0f, GradClipping.ClipGradNorm([noGrad], 1f));
    }
}
