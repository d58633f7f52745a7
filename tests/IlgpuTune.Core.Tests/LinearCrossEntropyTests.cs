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
    public void Fused_EqualsLinearThenCrossEntropy(string device, int chunk)
    {
        using var d = Device.Create(device);
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
        Close.Assert("dH", plain.DH, fused.DH, 1e-6, 1e-5);
        Close.Assert("dW", plain.DW, fused.DW, 1e-6, 1e-5);
    }
}
