using IlgpuTune.Numerics;
using IlgpuTune.Core;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

public class LinearLogProbsTests
{
    // logp and the gradients of Σ g[r]·logp[r], against log_softmax(h·Wᵀ) computed on the host in fp64. One 16-bit case: each
    // emulated tensor-core device compiles its GEMMs anew (slow); the f16 rounding of dLogits is checked in SequenceLogProbTests.
    [Theory]
    [InlineData("cpu", 1)]
    [InlineData("cpu", 0)]
    [InlineData("ilgpu-cpu", 3)]
    [InlineData("ilgpu-cpu", 0, DType.BF16)]
    public void Fused_EqualsLogSoftmaxGather(string device, int chunk, DType precision = DType.F32)
    {
        using var d = Device.Create(device);
        d.Precision = Precision.Of(precision);
        int rows = 7, hidden = 5, vocab = 11;
        int[] targets = [3, -100, 0, 10, 7, -100, 2];
        var hData = Rand.Floats(1, rows * hidden);
        var wData = Rand.Floats(2, vocab * hidden);
        var g = Rand.Floats(3, rows, 2f);

        var wantLogp = new double[rows];
        var wantDH = new double[rows * hidden];
        var wantDW = new double[vocab * hidden];
        for (int r = 0; r < rows; r++)
        {
            var logits = Enumerable.Range(0, vocab).Select(c => Enumerable.Range(0, hidden).Sum(k => (double)hData[r * hidden + k] * wData[c * hidden + k])).ToArray();
            double max = logits.Max(), lse = max + Math.Log(logits.Sum(x => Math.Exp(x - max)));
            if (targets[r] < 0) continue;
            wantLogp[r] = logits[targets[r]] - lse;
            for (int c = 0; c < vocab; c++)
            {
                double dl = g[r] * ((c == targets[r] ? 1 : 0) - Math.Exp(logits[c] - lse));
                for (int k = 0; k < hidden; k++)
                {
                    wantDH[r * hidden + k] += dl * wData[c * hidden + k];
                    wantDW[c * hidden + k] += dl * hData[r * hidden + k];
                }
            }
        }

        using var h = Tensor.FromArray(d, hData, rows, hidden);
        using var w = Tensor.FromArray(d, wData, vocab, hidden);
        h.RequiresGrad = w.RequiresGrad = true;
        using var t = Tensor.FromArray(d, targets, rows);
        using var tape = new Tape();
        using var logp = Ops.LinearLogProbs(h, w, t, chunk);
        var got = logp.ToFloatArray();
        tape.Backward(logp, Tensor.FromArray(d, g, rows));

        double tol = precision == DType.F32 ? 1e-5 : 3e-2;
        Close.Assert("logp", wantLogp.Select(x => (float)x).ToArray(), got, tol, tol);
        Close.Assert("dH", wantDH.Select(x => (float)x).ToArray(), h.Grad!.ToFloatArray(), tol, tol);
        Close.Assert("dW", wantDW.Select(x => (float)x).ToArray(), w.Grad!.ToFloatArray(), tol, tol);
    }
}
