using IlgpuTune.Numerics;
using IlgpuTune.Core;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

public class LinearCrossEntropyTests
{
    [Theory]
    [InlineData("cpu", 1)]
    [InlineData("cpu", 4)]
    [InlineData("cpu", 64)]
    [InlineData("ilgpu-cpu", 3)]
    [InlineData("ilgpu-cpu", 0, DType.BF16)]
    [InlineData("ilgpu-cpu", 4, DType.F16)]
    public void Fused_EqualsLinearThenCrossEntropy(string device, int chunk, DType precision = DType.F32)
    {
        using var d = Device.Create(device);
        d.Precision = Precision.Of(precision);
        int rows = 7, hidden = 5, vocab = 11;
        var targets = new[] { 3, -100, 0, 10, 7, -100, 2 };
        (float Loss, float[] DH, float[] DW) Run(bool fused)
        {
            using var h = Tensor.FromArray(d, Rand.Floats(1, rows * hidden), rows, hidden);
            using var w = Tensor.FromArray(d, Rand.Floats(2, vocab * hidden), vocab, hidden);
            h.RequiresGrad = w.RequiresGrad = true;
            using var t = Tensor.FromArray(d, targets, rows);
            using var tape = new Tape();
            Tensor loss;
            if (fused) loss = Ops.LinearCrossEntropy(h, w, t, chunk);
            else
            {
                using var logits = Ops.Linear(h, w);
                loss = Ops.CrossEntropy(logits, t);
            }
            using (loss)
            {
                using var scaled = Ops.Scale(loss, 3f); // a non-unit dLoss reaches the fused backward
                tape.Backward(scaled);
                return (loss.Item(), h.Grad!.ToFloatArray(), w.Grad!.ToFloatArray());
            }
        }
        var plain = Run(false);
        var fused = Run(true);
        Assert.Equal(plain.Loss, fused.Loss, 5);
        // 16-bit: Linear rounds dLoss·dLogits, the fused op rounds dLogits and scales by dLoss after the products, so
        // elements differ by up to a bf16/f16 ulp before sums that cancel: compare relative to the largest gradient.
        double Tol(float[] a) => precision == DType.F32 ? 1e-6 : 1e-2 * a.Max(Math.Abs);
        double rel = precision == DType.F32 ? 1e-5 : 1e-2;
        Close.Assert("dH", plain.DH, fused.DH, Tol(plain.DH), rel);
        Close.Assert("dW", plain.DW, fused.DW, Tol(plain.DW), rel);
    }
}
