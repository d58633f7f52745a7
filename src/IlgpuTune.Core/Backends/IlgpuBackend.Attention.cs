// Attention on ILGPU devices: tiled FlashAttention-2, O(seq) memory: it keeps only logsumexp[batch, heads, seq] (and
// q, k, v, o). At a 16-bit precision and a generated head dim it runs on tensor cores (FlashAttentionHalf): q, k, v are
// rounded once and the 16-bit copies (half the size) are what backward keeps; dO is rounded inside the backward launcher.
// Head dims without a generated tensor-core kernel (256: Gemma 3) take the fp32 flash kernels.
using ILGPU;
using IlgpuTune.Kernels;
using K = IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend
{
    private const string Flash = "flash", FlashHalf = "flash-half";

    public AttentionSaved? AttentionForward(AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? segments, bool segmentsSorted,
        Precision precision, Tensor o, bool keep)
    {
        bool half = precision.IsHalf && FlashAttentionHalf.Supports(Sizes(s));
        var lse = Tensor.Empty(device, DType.F32, s.Batch, s.NumHeads, s.Seq);
        Tensor qs, ks, vs;
        if (half)
        {
            (qs, ks, vs) = (Ops.CastRaw(q, precision.Matmul), Ops.CastRaw(k, precision.Matmul), Ops.CastRaw(v, precision.Matmul));
            using var none = NoSegments(segments);
            FlashAttentionHalf.Forward(_k, precision.Half, new(qs.View<ushort>(), ks.View<ushort>(), vs.View<ushort>(),
                Segments(segments, none), segmentsSorted), Sizes(s), new(o.F32View, lse.F32View));
        }
        else
        {
            (qs, ks, vs) = (q.Alias(), k.Alias(), v.Alias());
            using var none = NoSegments(segments);
            K.FlashAttention.Forward(_k, new(q.F32View, k.F32View, v.F32View, Segments(segments, none)), Sizes(s),
                new(o.F32View, lse.F32View));
        }
        var saved = new AttentionSaved(s, half ? FlashHalf : Flash, qs, ks, vs, o.Alias(), lse, segments?.Alias())
            { SegmentsSorted = segmentsSorted };
        if (keep) return saved;
        saved.Dispose();
        return null;
    }

    public void AttentionBackward(AttentionSaved saved, Tensor dO, Tensor dQ, Tensor dK, Tensor dV)
    {
        var s = saved.Shape;
        var t = saved.Tensors;
        var (q, k, v, o, lse) = (t[0]!, t[1]!, t[2]!, t[3]!, t[4]!);
        using var none = NoSegments(t[5]);
        var segments = Segments(t[5], none);
        using var delta = Tensor.Empty(device, DType.F32, s.Batch, s.NumHeads, s.Seq);
        if (saved.Implementation == FlashHalf)
        {
            using var dOHalf = Tensor.Empty(device, q.DType, dO.Shape);
            FlashAttentionHalf.Backward(_k, Precision.HalfOf(q.DType), dO.F32View, new(q.View<ushort>(), k.View<ushort>(),
                v.View<ushort>(), segments, saved.SegmentsSorted), Sizes(s), new(o.F32View, lse.F32View), dOHalf.View<ushort>(), delta.F32View, new(dQ.F32View, dK.F32View, dV.F32View));
        }
        else
            K.FlashAttention.Backward(_k, dO.F32View, new(q.F32View, k.F32View, v.F32View, segments), Sizes(s), new(o.F32View, lse.F32View), delta.F32View, new(dQ.F32View, dK.F32View, dV.F32View));
    }

    public void AttentionWithCache(Tensor q, Tensor keys, Tensor values, int start, int numHeads, int numKvHeads, int headDim, Tensor o,
        int slidingWindow = 0, float? scale = null)
    {
        int n = ManagedCpuBackend.Tokens(q, numHeads, headDim);
        using var probs = Tensor.Empty(device, DType.F32, n, numHeads, start + n);
        K.Attention.ForwardWithCache(_k, q.F32View, keys.F32View, values.F32View, start, n, numHeads, numKvHeads, headDim, probs.F32View,
            o.F32View, slidingWindow, scale);
    }

    private static K.Attention.Sizes Sizes(AttentionShape s) => ManagedCpuBackend.Sizes(s);

    // Kernels reject null views: without segment ids they get an empty view of a real one-element buffer (one segment per row).
    private Tensor? NoSegments(Tensor? segments) => segments is null ? Tensor.Empty(device, DType.I32, 1) : null;

    private static ArrayView<int> Segments(Tensor? segments, Tensor? none) =>
        segments?.I32View ?? none!.I32View.SubView(0, 0);
}
