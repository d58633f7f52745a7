using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>Ops.Attention with bf16/f16 matmuls goes through the tensor-core flash kernels: checked against the naive fp32
/// reference on inputs rounded to 16 bits (P is rounded inside, hence the loose tolerance).</summary>
public class AttentionHalfTests
{
    [Theory]
    [InlineData(DType.BF16, 2e-2, false)]
    [InlineData(DType.BF16, 2e-2, true)] // sorted segment ids: tile skipping
    [InlineData(DType.F16, 4e-3, true)]
    public void ForwardAndBackward_MatchTheReferenceOnRoundedInputs(DType precision, double tol, bool segmentsSorted)
    {
        float[] Round(float[] a) => a.Select(v => precision == DType.BF16
            ? HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(v)) : HalfBits.F16ToFloat(HalfBits.FloatToF16(v))).ToArray();
        using var d = Device.Create("ilgpu-cpu");
        d.Precision = Precision.Of(precision);
        const int batch = 1, seq = 9, heads = 2, kvHeads = 1, hd = 16;
        var (qData, kData, vData) = (Round(Rand.Floats(1, seq * heads * hd, 2f)), Round(Rand.Floats(2, seq * kvHeads * hd, 2f)),
            Round(Rand.Floats(3, seq * kvHeads * hd)));
        var gData = Round(Rand.Floats(4, seq * heads * hd));
        int[] segData = [0, 0, 0, 0, 1, 1, 1, 1, 1];
        using var q = Tensor.FromArray(d, qData, seq, heads * hd);
        using var k = Tensor.FromArray(d, kData, seq, kvHeads * hd);
        using var v = Tensor.FromArray(d, vData, seq, kvHeads * hd);
        using var seg = Tensor.FromArray(d, segData, seq);
        q.RequiresGrad = k.RequiresGrad = v.RequiresGrad = true;
        float[] o, dQ, dK, dV;
        using (var tape = new Tape())
        {
            using var ot = Ops.Attention(q, k, v, seg, new AttentionShape(batch, seq, heads, kvHeads, hd), segmentsSorted);
            o = ot.ToFloatArray();
            tape.Backward(ot, Tensor.FromArray(d, gData, seq, heads * hd));
            (dQ, dK, dV) = (q.Grad!.ToFloatArray(), k.Grad!.ToFloatArray(), v.Grad!.ToFloatArray());
        }
        var (oRef, dQRef, dKRef, dVRef) = (new float[o.Length], new float[dQ.Length], new float[dK.Length], new float[dV.Length]);
        var probs = new float[batch * heads * seq * seq];
        Attention.ForwardCpu<float>(qData, kData, vData, segData, new(batch, seq, heads, kvHeads, hd), oRef, [], probs);
        Attention.BackwardCpu<float>(gData, qData, kData, vData, segData, new(batch, seq, heads, kvHeads, hd), dQRef, dKRef, dVRef);
        foreach (var (name, want, got) in new[] { ("o", oRef, o), ("dQ", dQRef, dQ), ("dK", dKRef, dK), ("dV", dVRef, dV) })
        {
            double rel = Close.RelativeToMax(want, got);
            Assert.True(rel <= tol, $"{name}: max error {rel:G3} of max |expected| (tolerance {tol:G3})");
        }
    }
}
