// Ops the driver runtime does not launch yet: each throws NotSupportedException naming the op (never a silent other path).
// Chat (forward, KV cache, fp32 and 16-bit products) is in DriverBackend.cs, fp32 training in DriverBackend.Training.cs.

namespace IlgpuTune.Core;

internal sealed partial class DriverBackend
{
    public void LinearLogProbs(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, Tensor logp) => throw NotYet("linear_log_probs");

    public void LinearLogProbsBackward(Tensor h, Tensor weight, Tensor targets, Tensor dLogp, int chunk, Precision precision, Tensor? dH, Tensor? dW) =>
        throw NotYet("linear_log_probs backward");

    public void MoeRouterForward(Tensor logits, int topK, bool normalize, Tensor weights, Tensor experts) => throw NotYet("moe router");

    public void MoeRouterBackward(Tensor dWeights, Tensor logits, Tensor experts, bool normalize, Tensor dLogits) => throw NotYet("moe router backward");

    public void MoeSort(Tensor experts, int numExperts, Tensor counts, Tensor order) => throw NotYet("moe sort");

    public void MoeGather(Tensor x, Tensor order, int offset, int topK, Tensor xe) => throw NotYet("moe gather");

    public void MoeGatherBackward(Tensor dXe, Tensor order, int offset, int topK, Tensor dX) => throw NotYet("moe gather backward");

    public void MoeCombine(Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor y) => throw NotYet("moe combine");

    public void MoeCombineBackward(Tensor dY, Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor dYe, Tensor dWeights) =>
        throw NotYet("moe combine backward");

    public void MoeAuxStats(Tensor logits, Tensor experts, Tensor? mask, Tensor counts, Tensor probs) => throw NotYet("moe load-balancing stats");

    public void MoeAuxBackward(Tensor logits, Tensor? mask, Tensor grad, Tensor dLogits) => throw NotYet("moe load-balancing backward");
}
