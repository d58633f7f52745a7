// Every op family's forward and backward on tensors, one implementation per kind of device (as nietras/Llm.cs's ILlm
// lists its ops): ManagedCpuBackend runs the CPU references (TensorPrimitives + Parallel.For), IlgpuBackend the ILGPU
// launchers (CUDA, or ILGPU's CPU accelerator in tests). Device picks one when it is made. The glue in Ops/<Op>.cs checks
// shapes, allocates outputs, records the tape entry and calls these; it never asks which device it runs on.
// Outputs are written (overwritten unless a method says it accumulates); tensors are F32 unless a parameter says otherwise.
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

/// <summary>A matrix product's sizes: c[M, N] from a (M×K) and b (K×N), in the layout's storage order.</summary>
public readonly record struct MatMulShape(int M, int N, int K);

/// <summary>
/// Causal attention's sizes: q, o [Batch*Seq, NumHeads*HeadDim], k, v [Batch*Seq, NumKvHeads*HeadDim]. SlidingWindow W > 0: query i
/// sees keys j with i - j &lt; W only (transformers' sliding_window_overlay); Scale null: 1/sqrt(HeadDim) (Gemma 3 passes
/// query_pre_attn_scalar**-0.5).
/// </summary>
public readonly record struct AttentionShape(int Batch, int Seq, int NumHeads, int NumKvHeads, int HeadDim, int SlidingWindow = 0,
    float? Scale = null)
{
    public long Tokens => (long)Batch * Seq;
    public long QueryElements => Tokens * NumHeads * HeadDim;
    public long KeyValueElements => Tokens * NumKvHeads * HeadDim;
}

/// <summary>What an attention forward keeps for its backward; the backend that made it reads it back. Owns its tensors.</summary>
public sealed class AttentionSaved(AttentionShape shape, string implementation, params Tensor?[] tensors) : IDisposable
{
    public AttentionShape Shape { get; } = shape;
    /// <summary>Which kernels made it ("reference", "flash", "flash-half"): the backward that fits.</summary>
    public string Implementation { get; } = implementation;
    public IReadOnlyList<Tensor?> Tensors { get; } = tensors;
    /// <summary>Segment ids never decrease along a row (tile-skipping kernels may skip between samples).</summary>
    public bool SegmentsSorted { get; init; }

    public void Dispose()
    {
        foreach (var t in Tensors) t?.Dispose();
    }
}

/// <summary>One parameter's share of AdamW's flat state: elements [Offset, Offset + Param.Length) of each moment.</summary>
public readonly record struct AdamWSlice(Tensor Param, long Offset);

/// <summary>Parameters of one step count: they share the bias corrections, so each group is one set of launches.</summary>
public sealed record AdamWGroup(AdamWStep Hyper, IReadOnlyList<AdamWSlice> Members);

/// <summary>AdamW's two moments (exp_avg, exp_avg_sq) for every parameter, flat fp32, where the backend keeps them.</summary>
public interface IAdamWState : IDisposable
{
    /// <summary>True when the state lives in page-locked host memory and streams through the device per step.</summary>
    bool IsPaged { get; }

    /// <summary>
    /// One update of the given parameters (their Grad set), group by group. A paged state may still be running it when this
    /// returns: launches that read a parameter wait for its part, and the gradients must stay alive until <see cref="Settle"/>.
    /// </summary>
    void Step(IReadOnlyList<AdamWGroup> groups);

    /// <summary>Orders all later device work after the last <see cref="Step"/>, so its gradients may be freed.</summary>
    void Settle()
    {
    }

    void Export(float[] avg, float[] avgSq);

    void Import(float[] avg, float[] avgSq);
}

public interface IOpBackend
{
    // ---- elementwise (Elementwise.cs) ----
    void Fill(Tensor y, float value);
    /// <summary>y += x.</summary>
    void Accumulate(Tensor x, Tensor y);
    void Add(Tensor a, Tensor b, Tensor y);
    void Mul(Tensor a, Tensor b, Tensor y);
    void Scale(Tensor x, float alpha, Tensor y);
    /// <summary>dBias[cols] += Σ_rows dY[rows, cols].</summary>
    void SumRows(Tensor dY, Tensor dBias);
    /// <summary>Copies <paramref name="count"/> elements from src at srcOffset to dst at dstOffset (same dtype).</summary>
    void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count);

    // ---- activation (Activation.cs) ----
    void SiluForward(Tensor x, Tensor y);
    void SiluBackward(Tensor dY, Tensor x, Tensor dX);
    void SwiGluForward(Tensor gate, Tensor up, Tensor y);
    void SwiGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp);
    /// <summary>GeGLU of Gemma: gelu_pytorch_tanh(gate) * up, elementwise.</summary>
    void GeGluForward(Tensor gate, Tensor up, Tensor y);
    void GeGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp);

    // ---- cast (Cast.cs): F32 <-> BF16 / F16, round to nearest even ----
    void Cast(Tensor x, Tensor y);

    // ---- column gather (ColumnGather.cs): y[r, c] = x[r, index[c]] ----
    void ColumnGatherForward(Tensor x, Tensor index, Tensor y);
    /// <summary>dX (zeroed) [rows, inCols] += scatter of dY.</summary>
    void ColumnGatherBackward(Tensor dY, Tensor index, Tensor dX);

    // ---- dropout (Dropout.cs): the mask is a function of (seed, index); backward is the same op on dY ----
    void Dropout(Tensor x, float p, ulong seed, Tensor y);

    // ---- embedding (Embedding.cs): table F32, or a frozen BF16/F16 table ----
    void EmbeddingForward(Tensor ids, Tensor table, Tensor y);
    /// <summary>dTable (zeroed) [vocab, hidden] += dY rows at ids.</summary>
    void EmbeddingBackward(Tensor dY, Tensor ids, Tensor dTable);

    // ---- RMSNorm (RmsNorm.cs): x[rows, dim] ----
    void RmsNormForward(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd);
    /// <summary>dX overwritten, dW (zeroed) accumulated.</summary>
    void RmsNormBackward(Tensor dY, Tensor x, Tensor weight, Tensor rstd, Tensor dX, Tensor dW);

    // ---- rotary embedding (Rope.cs): x[tokens, heads*headDim], cos/sin[tokens, headDim/2] ----
    void RopeForward(Tensor x, Tensor cos, Tensor sin, int heads, int headDim, Tensor y);
    void RopeBackward(Tensor dY, Tensor cos, Tensor sin, int heads, int headDim, Tensor dX);

    // ---- cross-entropy (CrossEntropy.cs): logits[rows, vocab], targets I32[rows] (-100 ignored) ----
    void CrossEntropyForward(Tensor logits, Tensor targets, Tensor lossPerRow, Tensor logSumExp);
    void CrossEntropyBackward(Tensor logits, Tensor targets, Tensor logSumExp, float gradScale, Tensor dLogits);

    // ---- matrix products (MatMul.cs fp32, Gemm.cs 16-bit tensor cores) ----
    /// <summary>
    /// c = alpha·op(a)·op(b) (+ bias[N]) (+ c when accumulating). a, b F32, or both BF16/F16 (tensor cores; c F32 or the
    /// same 16-bit type), or (DeviceCaps.WidensHalfWeights) a F32 and b a frozen BF16/F16 weight in NT / NN, c F32.
    /// NT: a[M,K], b[N,K]; NN: a[M,K], b[K,N]; TN: a[K,M], b[K,N].
    /// </summary>
    void MatMul(GemmLayout layout, MatMulShape shape, Tensor a, Tensor b, Tensor? bias, float alpha, bool accumulate, Tensor c);

    /// <summary>
    /// Output projection fused with cross-entropy, chunked over rows (Ops.LinearCrossEntropy): returns the summed loss of
    /// the supervised rows; with dH / dW given, fills dH [rows, hidden] and accumulates dW [vocab, hidden], both scaled by
    /// gradScale. With a 16-bit precision the products run on tensor cores (h, weight and dLogits rounded).
    /// </summary>
    double LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, float gradScale, Tensor? dH, Tensor? dW);

    /// <summary>
    /// Output projection fused with the target log-probs, chunked over rows (Ops.LinearLogProbs, SequenceLogProb.cs):
    /// logp[rows] = log_softmax(h·Wᵀ)[r, targets[r]], 0 where ignored.
    /// </summary>
    void LinearLogProbs(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, Tensor logp);

    /// <summary>Its backward, recomputing each chunk's logits: dH [rows, hidden] overwritten, dW [vocab, hidden] accumulated.</summary>
    void LinearLogProbsBackward(Tensor h, Tensor weight, Tensor targets, Tensor dLogp, int chunk, Precision precision, Tensor? dH, Tensor? dW);

    // ---- attention (Attention.cs, FlashAttention.cs, FlashAttentionHalf*.cs) ----
    /// <summary>
    /// Causal attention with GQA (segments I32 [tokens] or null: one sample per row; segmentsSorted lets tile-skipping kernels
    /// skip tiles between packed samples) -> o. Returns what backward needs when <paramref name="keep"/>, else null.
    /// </summary>
    AttentionSaved? AttentionForward(AttentionShape shape, Tensor q, Tensor k, Tensor v, Tensor? segments, bool segmentsSorted,
        Precision precision, Tensor o, bool keep);
    void AttentionBackward(AttentionSaved saved, Tensor dO, Tensor dQ, Tensor dK, Tensor dV);
    /// <summary>Inference: q[n, heads*headDim] at positions start.. over cached keys/values [capacity, kvHeads*headDim] -> o;
    /// slidingWindow 0 = none, scale null = 1/sqrt(headDim), as in AttentionShape.</summary>
    void AttentionWithCache(Tensor q, Tensor keys, Tensor values, int start, int numHeads, int numKvHeads, int headDim, Tensor o,
        int slidingWindow = 0, float? scale = null);

    // ---- mixture of experts (Moe.cs): tokens T, experts E, top-k K, slot = t*K + k, sorted rows grouped by expert ----
    /// <summary>logits [T, E] -> weights F32 [T, K] (softmax, top-k, renormalised when asked), experts I32 [T, K].</summary>
    void MoeRouterForward(Tensor logits, int topK, bool normalize, Tensor weights, Tensor experts);
    /// <summary>dWeights [T, K] -> dLogits [T, E] (overwritten).</summary>
    void MoeRouterBackward(Tensor dWeights, Tensor logits, Tensor experts, bool normalize, Tensor dLogits);
    /// <summary>Stable counting sort of experts I32 [T*K] -> counts I32 [E], order I32 [T*K] (sorted row -> slot).</summary>
    void MoeSort(Tensor experts, int numExperts, Tensor counts, Tensor order);
    /// <summary>xe[r] = x[order[offset + r] / topK] for r &lt; xe rows: one expert's token rows. x [T, H], xe [count, H].</summary>
    void MoeGather(Tensor x, Tensor order, int offset, int topK, Tensor xe);
    /// <summary>dX[order[offset + r] / topK] += dXe[r] (accumulates; one expert never sees a token twice).</summary>
    void MoeGatherBackward(Tensor dXe, Tensor order, int offset, int topK, Tensor dX);
    /// <summary>y[t] += weights[slot] * ye[r], slot = order[offset + r], t = slot / topK (accumulates). ye [count, H], y [T, H].</summary>
    void MoeCombine(Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor y);
    /// <summary>dYe[r] = weights[slot] dY[t] (overwritten), dWeights[slot] = dY[t] . ye[r] (written for this expert's slots).</summary>
    void MoeCombineBackward(Tensor dY, Tensor ye, Tensor weights, Tensor order, int offset, int topK, Tensor dYe, Tensor dWeights);
    /// <summary>Load-balancing sums of one layer: counts[e] += Σ_t m_t #{k: experts[t,k] = e}, probs[e] += Σ_t m_t softmax(logits_t)_e;
    /// mask F32 [T] (1 = real token) or null.</summary>
    void MoeAuxStats(Tensor logits, Tensor experts, Tensor? mask, Tensor counts, Tensor probs);
    /// <summary>dLogits[t] = softmax backward of g_e = grad[e] * m_t (overwritten); grad F32 [E].</summary>
    void MoeAuxBackward(Tensor logits, Tensor? mask, Tensor grad, Tensor dLogits);

    // ---- NF4 / FP4 (Nf4.cs) ----
    /// <summary>x F32 [n] -> packed U8 [(n+1)/2], absmax F32 [blocks].</summary>
    void Nf4Quantize(Tensor x, int blockSize, QuantType type, Tensor packed, Tensor absmax);
    /// <summary>absmax F32 [m] -> qabsmax U8 [m], absmax2 F32 [ceil(m/256)], offset F32 [1] with code8 [256].</summary>
    void Nf4DoubleQuantize(Tensor absmax, Tensor code8, Tensor qabsmax, Tensor absmax2, Tensor offset);
    /// <summary>The weight dequantized into y (F32, BF16 or F16 [out, in]).</summary>
    void Nf4Dequantize(Nf4Weight w, Tensor y);
    /// <summary>
    /// c [M, N] F32 = a · op(dequant(w)) (+ bias[N]) for a frozen 4-bit weight w [out, in]: NT (a [M, in], N = out: the
    /// forward) or NN (a [M, out], N = in: the input grad); a F32, or BF16/F16 for tensor cores (w dequantized to a's type).
    /// This default dequantizes w into a transient workspace; a backend may read the packed weight inside the product.
    /// </summary>
    void MatMulNf4(GemmLayout layout, MatMulShape shape, Tensor a, Nf4Weight w, Tensor? bias, Tensor c)
    {
        using var dense = w.Dequantize(a.DType);
        MatMul(layout, shape, a, dense, bias, 1f, false, c);
    }

    // ---- optimizer (AdamW.cs) ----
    /// <summary>grads *= factor in place; true if any element was inf or NaN before.</summary>
    bool UnscaleAndCheck(IReadOnlyList<Tensor> grads, float factor);
    /// <summary>sum(g²) per tensor: fp32 within a tensor, partial sums added in double.</summary>
    double[] SumsOfSquares(IReadOnlyList<Tensor> grads);
    /// <summary>Zeroed AdamW state of <paramref name="total"/> elements per moment.</summary>
    IAdamWState CreateAdamWState(long total, bool paged, long pagedChunkElements);

    // ---- host memory (HostOffload.cs) ----
    /// <summary>Keeps device tensors in host memory until needed (gradient checkpoints); null where tensors stay where they
    /// are: the managed CPU path (host memory already) and the driver runtime (not implemented there: they stay on the GPU).</summary>
    IHostOffload? HostOffload => null;
}
