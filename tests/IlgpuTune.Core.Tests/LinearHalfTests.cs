using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>Ops.Linear on tensor cores (bf16 or fp16 inputs, fp32 accumulation) against the fp32 reference on bf16-rounded inputs.</summary>
public class LinearHalfTests
{
    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void ForwardAndBackward_MatchTheReferenceOnRoundedInputs(DType precision)
    {
        float[] Round(float[] a) => a.Select(v => precision == DType.BF16
            ? HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(v)) : HalfBits.F16ToFloat(HalfBits.FloatToF16(v))).ToArray();
        using var d = Device.Create("ilgpu-cpu");
        d.Precision = Precision.Of(precision);
        int rows = 5, inF = 24, outF = 7;
        var xData = Rand.Floats(1, rows * inF);
        var wData = Rand.Floats(2, outF * inF);
        var bData = Rand.Floats(3, outF);
        var gData = Rand.Floats(4, rows * outF);
        using var x = Tensor.FromArray(d, xData, rows, inF);
        using var w = Tensor.FromArray(d, wData, outF, inF);
        using var b = Tensor.FromArray(d, bData, outF);
        x.RequiresGrad = w.RequiresGrad = b.RequiresGrad = true;
        float[] y, dX, dW, dB;
        using (var tape = new Tape())
        {
            using var yt = Ops.Linear(x, w, b);
            y = yt.ToFloatArray();
            tape.Backward(yt, Tensor.FromArray(d, gData, rows, outF));
            (dX, dW, dB) = (x.Grad!.ToFloatArray(), w.Grad!.ToFloatArray(), b.Grad!.ToFloatArray());
        }
        var (xr, wr, gr) = (Round(xData), Round(wData), Round(gData));
        var yRef = new float[rows * outF];
        MatMul.NTCpu<float>(xr, wr, rows, outF, inF, 1f, false, yRef);
        for (int i = 0; i < yRef.Length; i++) yRef[i] += bData[i % outF];
        var dXRef = new float[rows * inF];
        MatMul.NNCpu<float>(gr, wr, rows, inF, outF, 1f, false, dXRef);
        var dWRef = new float[outF * inF];
        MatMul.TNCpu<float>(gr, xr, outF, inF, rows, 1f, false, dWRef);
        var dBRef = new float[outF];
        Elementwise.SumRowsCpu<float>(gData, rows, outF, dBRef);
        Close.Assert("y", yRef, y, 1e-5, 1e-5);
        Close.Assert("dX", dXRef, dX, 1e-5, 1e-5);
        Close.Assert("dW", dWRef, dW, 1e-5, 1e-5);
        Close.Assert("dBias", dBRef, dB, 1e-5, 1e-5);
    }
}
