using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Training.Tests;

/// <summary>
/// LoRA keeps the bf16 casts of A and B between forwards (Ops.SharedCast); an AdamW step writes them in place and must
/// make the next forward cast them again: its output equals a LoRA linear on fresh tensors holding the updated values.
/// </summary>
public class AdamWLoraCastTests
{
    [Fact]
    public void ForwardAfterAStep_SeesTheUpdatedAdapter()
    {
        const int rows = 4, inF = 16, outF = 8, r = 4;
        using var d = Device.Create("ilgpu-cpu");
        d.Precision = Precision.Of(DType.BF16);
        using var x = Tensor.FromArray(d, Rand.Floats(1, rows * inF), rows, inF);
        using var w = Tensor.FromArray(d, Rand.Floats(2, outF * inF, 0.5f), outF, inF);
        using var a = Tensor.FromArray(d, Rand.Floats(3, r * inF, 0.3f), r, inF).Named("lora_A");
        using var b = Tensor.FromArray(d, Rand.Floats(4, outF * r, 0.3f), outF, r).Named("lora_B");
        a.RequiresGrad = b.RequiresGrad = true;
        float[] Forward(Tensor la, Tensor lb)
        {
            using var y = Ops.LoraLinear(x, w, null, la, lb, 2f, 0f, new Random(0));
            return y.ToFloatArray();
        }
        var before = Forward(a, b); // no tape: A's and B's casts stay kept
        using var opt = new AdamW([a, b], lr: 0.1);
        a.Grad = Tensor.FromArray(d, Rand.Floats(5, r * inF), r, inF);
        b.Grad = Tensor.FromArray(d, Rand.Floats(6, outF * r), outF, r);
        opt.Step();
        opt.ZeroGrad();
        var after = Forward(a, b);
        using var freshA = Tensor.FromArray(d, a.ToFloatArray(), r, inF);
        using var freshB = Tensor.FromArray(d, b.ToFloatArray(), outF, r);
        Close.Assert("after the step", Forward(freshA, freshB), after, 0, 0);
        Assert.NotEqual(before, after);
    }
}
