using IlgpuTune.Numerics;
using IlgpuTune.Core;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>
/// The fused tensor-core LoRA linear (one 16-bit cast of x and of dY, the branch's scale and add in the GEMM epilogue,
/// dX summed in place) against the same LoRA built from separate ops on the same device and precision: with a
/// power-of-two scaling both round alike and agree bit for bit; with any other scaling to 16-bit rounding.
/// </summary>
public class LoraHalfTests
{
    private const int Rows = 6, InF = 24, OutF = 10, R = 4;

    [Theory]
    [InlineData(DType.BF16, 2f, 0f, true, true)]
    [InlineData(DType.F16, 0.5f, 0f, false, true)]
    [InlineData(DType.BF16, 2f, 0.25f, true, true)] // dropout: the branch reads its own input
    [InlineData(DType.BF16, 2f, 0f, true, false)]   // x without grad (the first layer's input)
    [InlineData(DType.BF16, 0.3f, 0f, true, true)]
    public void FusedLora_EqualsTheComposedOps(DType precision, float scaling, float dropout, bool withBias, bool xGrad)
    {
        using var d = Device.Create("ilgpu-cpu");
        d.Precision = Precision.Of(precision);
        using var w = Tensor.FromArray(d, Rand.Floats(2, OutF * InF, 0.5f), OutF, InF);
        using var x = Tensor.FromArray(d, Rand.Floats(1, Rows * InF), Rows, InF);
        using var a = Tensor.FromArray(d, Rand.Floats(5, R * InF, 0.3f), R, InF);
        using var b = Tensor.FromArray(d, Rand.Floats(6, OutF * R, 0.3f), OutF, R);
        using var bias = Tensor.FromArray(d, Rand.Floats(7, OutF), OutF);
        var g = Rand.Floats(4, Rows * OutF);
        x.RequiresGrad = xGrad;
        a.RequiresGrad = b.RequiresGrad = bias.RequiresGrad = true;
        var tensors = new[] { x, a, b, bias };

        float[]?[] Run(Func<Tensor> f)
        {
            using var tape = new Tape();
            using var y = f();
            var yv = y.ToFloatArray();
            tape.Backward(y, Tensor.FromArray(d, g, Rows, OutF));
            var res = new float[]?[] { yv }.Concat(tensors.Select(t => t.Grad?.ToFloatArray())).ToArray();
            foreach (var t in tensors)
            {
                t.Grad?.Dispose();
                t.Grad = null;
            }
            return res;
        }
        var composed = Run(() =>
        {
            using var baseOut = Ops.Linear(x, w, withBias ? bias : null);
            using var dropped = Ops.Dropout(x, dropout, new Random(9));
            using var down = Ops.Linear(dropped, a);
            using var up = Ops.Linear(down, b);
            using var scaled = Ops.Scale(up, scaling);
            return Ops.Add(baseOut, scaled);
        });
        var fused = Run(() => Ops.LoraLinear(x, w, withBias ? bias : null, a, b, scaling, dropout, new Random(9)));

        bool exact = float.IsPow2(scaling);
        string[] names = ["y", "dX", "dA", "dB", "dBias"];
        for (int i = 0; i < names.Length; i++)
        {
            Assert.Equal(composed[i] is null, fused[i] is null);
            if (composed[i] is null) continue;
            if (exact) Close.Assert(names[i], composed[i]!, fused[i]!, 0, 0);
            else Close.Assert(names[i], composed[i]!, fused[i]!, 1e-2, 1e-2);
        }
        Assert.Equal(xGrad, fused[1] is not null);
    }
}
