// Ops the driver runtime does not launch yet: each throws NotSupportedException naming the op (never a silent other path).
// Chat (forward, KV cache, fp32 and 16-bit products) and the fp32 training ops up to the loss are in DriverBackend.cs.
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class DriverBackend
{
    public double LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, float gradScale, Tensor? dH, Tensor? dW) =>
        throw NotYet("linear_cross_entropy");

    public void LinearLogProbs(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, Tensor logp) => throw NotYet("linear_log_probs");

    public void LinearLogProbsBackward(Tensor h, Tensor weight, Tensor targets, Tensor dLogp, int chunk, Precision precision, Tensor? dH, Tensor? dW) =>
        throw NotYet("linear_log_probs backward");

    public AttentionSaved? AttentionForward(AttentionShape shape, Tensor q, Tensor k, Tensor v, Tensor? segments, bool segmentsSorted,
        Precision precision, Tensor o, bool keep) => throw NotYet("attention (flash, training)");

    public void AttentionBackward(AttentionSaved saved, Tensor dO, Tensor dQ, Tensor dK, Tensor dV) => throw NotYet("attention backward");

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

    public void Nf4Quantize(Tensor x, int blockSize, QuantType type, Tensor packed, Tensor absmax) => throw NotYet("nf4 quantize");

    public void Nf4DoubleQuantize(Tensor absmax, Tensor code8, Tensor qabsmax, Tensor absmax2, Tensor offset) => throw NotYet("nf4 double quantize");

    public void Nf4Dequantize(Nf4Weight w, Tensor y) => throw NotYet("nf4 dequantize");

    public bool UnscaleAndCheck(IReadOnlyList<Tensor> grads, float factor) => throw NotYet("grad unscale");

    public double[] SumsOfSquares(IReadOnlyList<Tensor> grads) => throw NotYet("grad norm");

    public IAdamWState CreateAdamWState(long total, bool paged, long pagedChunkElements) => throw NotYet("adamw");
}
