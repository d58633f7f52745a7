using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// Causal scaled-dot-product attention with GQA: q[batch*seq, numHeads*headDim], k/v[batch*seq, numKvHeads*headDim]
    /// -> o[batch*seq, numHeads*headDim]. The backend picks the implementation (the naive reference with probs[batch, heads,
    /// seq, seq] on the managed CPU path; FlashAttention-2 with O(seq) memory on ILGPU devices, on tensor cores at a 16-bit
    /// precision) and its backward reads what its forward kept.
    /// <paramref name="segmentIds"/> (I32 [batch*seq], optional) keeps packed samples from attending to each other;
    /// <paramref name="segmentsSorted"/>: they never decrease along a row (Kernels.FlashAttentionHalf.SegmentsSorted), so the
    /// tensor-core kernels skip the tiles between samples (same results).
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? segmentIds, AttentionShape shape, bool segmentsSorted = false)
    {
        const string op = "attention";
        RequireF32(op, q, "q");
        RequireF32(op, k, "k");
        RequireF32(op, v, "v");
        var s = shape;
        if (q.Length != s.QueryElements || k.Length != s.KeyValueElements || v.Length != k.Length)
            throw new ArgumentException($"{op}: q {ShapeText(q.Shape)}, k {ShapeText(k.Shape)}, v {ShapeText(v.Shape)} do not fit batch {s.Batch}, " +
                $"seq {s.Seq}, heads {s.NumHeads}/{s.NumKvHeads}, headDim {s.HeadDim}");
        if (s.NumHeads % s.NumKvHeads != 0) throw new ArgumentException($"{op}: {s.NumHeads} heads are not a multiple of {s.NumKvHeads} kv heads");
        if (segmentIds is not null && (segmentIds.DType != DType.I32 || segmentIds.Length != s.Tokens))
            throw new ArgumentException($"{op}: segmentIds must be I32 [{s.Tokens}]");

        var dev = q.Device;
        var o = EmptyF32(dev, q.Shape);
        bool record = Tape.IsRecording(q, k, v);
        var saved = dev.Backend.AttentionForward(s, q, k, v, segmentIds, segmentsSorted, dev.Matmuls, o, keep: record);
        if (saved is null) return o;
        var (qShape, kShape) = (q.Shape, k.Shape);
        Tape.Record(op, [q, k, v], [o], ctx =>
        {
            var dO = ctx.GradOutput()!;
            var dQ = EmptyF32(dev, qShape);
            var dK = EmptyF32(dev, kShape);
            var dV = EmptyF32(dev, kShape);
            dev.Backend.AttentionBackward(saved, dO, dQ, dK, dV);
            ctx.AddGrad(0, dQ);
            ctx.AddGrad(1, dK);
            ctx.AddGrad(2, dV);
        }, [.. saved.Tensors.OfType<Tensor>()]);
        return o;
    }
}
