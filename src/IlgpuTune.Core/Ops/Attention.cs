using ILGPU;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// Causal scaled-dot-product attention with GQA: FlashAttention-2 on ILGPU devices (O(seq) memory), the naive reference
    /// (probs[batch, heads, seq, seq]) on the managed CPU path.
    /// q[batch*seq, numHeads*headDim], k/v[batch*seq, numKvHeads*headDim] -> o[batch*seq, numHeads*headDim].
    /// <paramref name="segmentIds"/> (I32 [batch*seq], optional) keeps packed samples from attending to each other;
    /// <paramref name="segmentsSorted"/>: they never decrease along a row (Kernels.FlashAttentionHalf.SegmentsSorted), so the
    /// tensor-core kernels skip the tiles between samples (same results).
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? segmentIds, int batch, int seq, int numHeads, int numKvHeads, int headDim,
        bool segmentsSorted = false)
    {
        const string op = "attention";
        RequireF32(op, q, "q");
        RequireF32(op, k, "k");
        RequireF32(op, v, "v");
        long tokens = (long)batch * seq;
        if (q.Length != tokens * numHeads * headDim || k.Length != tokens * numKvHeads * headDim || v.Length != k.Length)
            throw new ArgumentException($"{op}: q {ShapeText(q.Shape)}, k {ShapeText(k.Shape)}, v {ShapeText(v.Shape)} do not fit batch {batch}, seq {seq}, heads {numHeads}/{numKvHeads}, headDim {headDim}");
        if (numHeads % numKvHeads != 0) throw new ArgumentException($"{op}: {numHeads} heads are not a multiple of {numKvHeads} kv heads");
        if (segmentIds is not null && (segmentIds.DType != DType.I32 || segmentIds.Length != tokens))
            throw new ArgumentException($"{op}: segmentIds must be I32 [{tokens}]");

        var dev = q.Device;
        var o = EmptyF32(dev, q.Shape);
        if (!dev.IsCpu) return FlashAttention(q, k, v, segmentIds, batch, seq, numHeads, numKvHeads, headDim, segmentsSorted, o);

        // Managed CPU path: the naive reference, which keeps probs[batch, heads, seq, seq] for backward.
        var probs = EmptyF32(dev, batch, numHeads, seq, seq);
        Kernels.Attention.ForwardCpu<float>(q.F32, k.F32, v.F32, segmentIds is null ? ReadOnlySpan<int>.Empty : segmentIds.I32,
            batch, seq, numHeads, numKvHeads, headDim, probs.F32, o.F32);
        if (!Tape.IsRecording(q, k, v))
        {
            probs.Dispose();
            return o;
        }
        var sq = q.Alias();
        var sk = k.Alias();
        var sv = v.Alias();
        Tape.Record(op, [q, k, v], [o], ctx =>
        {
            var dO = ctx.GradOutput()!;
            var dQ = EmptyF32(dev, sq.Shape);
            var dK = EmptyF32(dev, sk.Shape);
            var dV = EmptyF32(dev, sv.Shape);
            Kernels.Attention.BackwardCpu<float>(dO.F32, sq.F32, sk.F32, sv.F32, probs.F32, batch, seq, numHeads, numKvHeads, headDim,
                dQ.F32, dK.F32, dV.F32);
            ctx.AddGrad(0, dQ);
            ctx.AddGrad(1, dK);
            ctx.AddGrad(2, dV);
        }, sq, sk, sv, probs);
        return o;
    }

    // ILGPU devices: tiled FlashAttention-2, O(seq) memory: saves only logsumexp[batch, heads, seq] (and q, k, v, o).
    // With bf16/f16 matmuls and a generated head dim it runs on tensor cores (FlashAttentionHalf), else in fp32.
    private static Tensor FlashAttention(Tensor q, Tensor k, Tensor v, Tensor? segmentIds, int batch, int seq, int numHeads,
        int numKvHeads, int headDim, bool segmentsSorted, Tensor o)
    {
        var dev = q.Device;
        if (dev.MatmulPrecision != MatmulPrecision.F32 && Kernels.FlashAttentionHalf.SupportsHeadDim(headDim))
            return FlashAttentionHalf(q, k, v, segmentIds, batch, seq, numHeads, numKvHeads, headDim, segmentsSorted, o);
        long tokens = (long)batch * seq;
        // An empty view (of a real buffer: kernels reject null views) means one segment per row.
        var segments = segmentIds?.Alias() ?? Tensor.Empty(dev, DType.I32, 1);
        ArrayView<int> SegmentView() => segments.I32View.SubView(0, segmentIds is null ? 0 : tokens);
        var lse = EmptyF32(dev, batch, numHeads, seq);
        Kernels.FlashAttention.Forward(K(q), q.F32View, k.F32View, v.F32View, SegmentView(), batch, seq, numHeads, numKvHeads, headDim,
            o.F32View, lse.F32View);
        if (!Tape.IsRecording(q, k, v))
        {
            lse.Dispose();
            segments.Dispose();
            return o;
        }
        var sq = q.Alias();
        var sk = k.Alias();
        var sv = v.Alias();
        var so = o.Alias();
        Tape.Record("attention", [q, k, v], [o], ctx =>
        {
            var dO = ctx.GradOutput()!;
            var dQ = EmptyF32(dev, sq.Shape);
            var dK = EmptyF32(dev, sk.Shape);
            var dV = EmptyF32(dev, sv.Shape);
            using var delta = EmptyF32(dev, batch, numHeads, seq);
            Kernels.FlashAttention.Backward(K(dO), dO.F32View, sq.F32View, sk.F32View, sv.F32View, so.F32View, lse.F32View, SegmentView(),
                batch, seq, numHeads, numKvHeads, headDim, delta.F32View, dQ.F32View, dK.F32View, dV.F32View);
            ctx.AddGrad(0, dQ);
            ctx.AddGrad(1, dK);
            ctx.AddGrad(2, dV);
        }, sq, sk, sv, so, lse, segments);
        return o;
    }

    // Tensor-core FlashAttention-2: q, k, v rounded to bf16/f16 once (the 16-bit copies, half the size, are what backward
    // keeps), fp32 o, logsumexp and grads; dO is rounded inside the backward kernel launcher.
    private static Tensor FlashAttentionHalf(Tensor q, Tensor k, Tensor v, Tensor? segmentIds, int batch, int seq, int numHeads,
        int numKvHeads, int headDim, bool segmentsSorted, Tensor o)
    {
        var dev = q.Device;
        var (half, dtype) = dev.MatmulPrecision == MatmulPrecision.BF16 ? (Kernels.HalfType.BFloat16, DType.BF16) : (Kernels.HalfType.Float16, DType.F16);
        long tokens = (long)batch * seq;
        var segments = segmentIds?.Alias() ?? Tensor.Empty(dev, DType.I32, 1);
        ArrayView<int> SegmentView() => segments.I32View.SubView(0, segmentIds is null ? 0 : tokens);
        var qb = CastRaw(q, dtype);
        var kb = CastRaw(k, dtype);
        var vb = CastRaw(v, dtype);
        var lse = EmptyF32(dev, batch, numHeads, seq);
        Kernels.FlashAttentionHalf.Forward(K(q), half, qb.View<ushort>(), kb.View<ushort>(), vb.View<ushort>(), SegmentView(), batch, seq,
            numHeads, numKvHeads, headDim, true, segmentsSorted, o.F32View, lse.F32View);
        if (!Tape.IsRecording(q, k, v))
        {
            foreach (var t in new[] { qb, kb, vb, lse, segments }) t.Dispose();
            return o;
        }
        var (qShape, kShape) = (q.Shape, k.Shape);
        var so = o.Alias();
        Tape.Record("attention", [q, k, v], [o], ctx =>
        {
            var dO = ctx.GradOutput()!;
            var dQ = EmptyF32(dev, qShape);
            var dK = EmptyF32(dev, kShape);
            var dV = EmptyF32(dev, kShape);
            using var dOb = Tensor.Empty(dev, dtype, qShape);
            using var delta = EmptyF32(dev, batch, numHeads, seq);
            Kernels.FlashAttentionHalf.Backward(K(dO), half, dO.F32View, qb.View<ushort>(), kb.View<ushort>(), vb.View<ushort>(), so.F32View,
                lse.F32View, SegmentView(), batch, seq, numHeads, numKvHeads, headDim, true, segmentsSorted, dOb.View<ushort>(), delta.F32View, dQ.F32View,
                dK.F32View, dV.F32View);
            ctx.AddGrad(0, dQ);
            ctx.AddGrad(1, dK);
            ctx.AddGrad(2, dV);
        }, qb, kb, vb, so, lse, segments);
        return o;
    }
}
