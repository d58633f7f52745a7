// Mixture-of-experts ops on the managed CPU device: the CPU references of kernels/IlgpuTune.Kernels/Moe.cs.
using K = IlgpuTune.Kernels;

namespace IlgpuTune.Core;

internal sealed partial class ManagedCpuBackend
{
    public void MoeRouterForward(Tensor logits, int topK, bool normalize, Tensor weights, Tensor experts) =>
        K.Moe.RouterForwardCpu<float>(logits.F32, logits.Dim(-1), topK, normalize, weights.F32, experts.I32);

    public void MoeRouterBackward(Tensor dWeights, Tensor logits, Tensor experts, bool normalize, Tensor dLogits) =>
        K.Moe.RouterBackwardCpu<float>(dWeights.F32, logits.F32, experts.I32, logits.Dim(-1), experts.Dim(-1), normalize, dLogits.F32);

    public void MoeSort(Tensor experts, int numExperts, Tensor counts, Tensor order) =>
        K.Moe.SortCpu(experts.I32, numExperts, counts.I32, order.I32);

    public void MoeGather(Tensor x, Tensor order, int offset, int topK, Tensor xe) =>
        K.Moe.GatherCpu<float>(x.F32, order.I32, offset, topK, x.Dim(-1), xe.F32);

    public void MoeGatherBackward(Tensor dXe, Tensor order, int offset, int topK, Tensor dX) =>
        K.Moe.GatherBackwardCpu<float>(dXe.F32, order.I32, offset, topK, dX.Dim(-1), dX.F32);

    public void MoeCombine(Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor y) =>
        K.Moe.CombineCpu<float>(ye.F32, weights.F32, order.I32, offset, topK, y.Dim(-1), y.F32);

    public void MoeCombineBackward(Tensor dY, Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor dYe, Tensor dWeights) =>
        K.Moe.CombineBackwardCpu<float>(dY.F32, ye.F32, weights.F32, order.I32, offset, topK, dY.Dim(-1), dYe.F32, dWeights.F32);

    public void MoeAuxStats(Tensor logits, Tensor experts, Tensor? mask, Tensor counts, Tensor probs) =>
        K.Moe.AuxStatsCpu<float>(logits.F32, experts.I32, mask is null ? default : mask.F32, logits.Dim(-1), experts.Dim(-1), counts.F32,
            probs.F32);

    public void MoeAuxBackward(Tensor logits, Tensor? mask, Tensor grad, Tensor dLogits) =>
        K.Moe.AuxBackwardCpu<float>(logits.F32, mask is null ? default : mask.F32, grad.F32, logits.Dim(-1), dLogits.F32);
}
