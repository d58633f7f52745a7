// Mixture-of-experts ops on ILGPU devices: the launchers of kernels/IlgpuTune.Kernels/Moe.cs.
using IlgpuTune.Numerics;
using K = IlgpuTune.Kernels;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend
{
    public void MoeRouterForward(Tensor logits, int topK, bool normalize, Tensor weights, Tensor experts)
    {
        int e = logits.Dim(-1);
        K.Moe.RouterForward(_k, logits.F32View, (int)(logits.Length / e), e, topK, normalize, weights.F32View, experts.I32View);
    }

    public void MoeRouterBackward(Tensor dWeights, Tensor logits, Tensor experts, bool normalize, Tensor dLogits)
    {
        int e = logits.Dim(-1);
        K.Moe.RouterBackward(_k, dWeights.F32View, logits.F32View, experts.I32View, (int)(logits.Length / e), e, experts.Dim(-1), normalize,
            dLogits.F32View);
    }

    public void MoeSort(Tensor experts, int numExperts, Tensor counts, Tensor order) =>
        K.Moe.Sort(_k, experts.I32View, (int)experts.Length, numExperts, counts.I32View, order.I32View);

    public void MoeGather(Tensor x, Tensor order, int offset, int topK, Tensor xe)
    {
        int h = x.Dim(-1);
        K.Moe.Gather(_k, x.F32View, order.I32View, offset, (int)(xe.Length / h), topK, h, xe.F32View);
    }

    public void MoeGatherBackward(Tensor dXe, Tensor order, int offset, int topK, Tensor dX)
    {
        int h = dX.Dim(-1);
        K.Moe.GatherBackward(_k, dXe.F32View, order.I32View, offset, (int)(dXe.Length / h), topK, h, dX.F32View);
    }

    public void MoeCombine(Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor y)
    {
        int h = y.Dim(-1);
        K.Moe.Combine(_k, ye.F32View, weights.F32View, order.I32View, offset, (int)(ye.Length / h), topK, h, y.F32View);
    }

    public void MoeCombineBackward(Tensor dY, Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor dYe, Tensor dWeights)
    {
        int h = dY.Dim(-1);
        K.Moe.CombineBackward(_k, dY.F32View, ye.F32View, weights.F32View, order.I32View, offset, (int)(ye.Length / h), topK, h, dYe.F32View,
            dWeights.F32View);
    }

    public void MoeAuxStats(Tensor logits, Tensor experts, Tensor? mask, Tensor counts, Tensor probs)
    {
        int e = logits.Dim(-1), tokens = (int)(logits.Length / e);
        using var rowProbs = Tensor.Empty(device, DType.F32, tokens, e);
        using var rowCounts = Tensor.Empty(device, DType.F32, tokens, e);
        using var none = NoMask(mask);
        K.Moe.AuxStats(_k, logits.F32View, experts.I32View, Mask(mask, none), tokens, e, experts.Dim(-1),
            rowProbs.F32View, rowCounts.F32View, counts.F32View, probs.F32View);
    }

    public void MoeAuxBackward(Tensor logits, Tensor? mask, Tensor grad, Tensor dLogits)
    {
        int e = logits.Dim(-1);
        using var none = NoMask(mask);
        K.Moe.AuxBackward(_k, logits.F32View, Mask(mask, none), grad.F32View, (int)(logits.Length / e), e,
            dLogits.F32View);
    }

    // As NoSegments: without a mask the kernels get an empty view of a real one-element buffer.
    private Tensor? NoMask(Tensor? mask) => mask is null ? Tensor.Empty(device, DType.F32, 1) : null;

    private static ILGPU.ArrayView<float> Mask(Tensor? mask, Tensor? none) => mask?.F32View ?? none!.F32View.SubView(0, 0);
}
