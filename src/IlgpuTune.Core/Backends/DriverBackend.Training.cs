// Training ops on the driver runtime: flash attention in fp32 (FlashAttention's plan pieces) and on tensor cores (the
// mma.sync kernels of FlashAttentionHalf's plans; not yet the Hopper wgmma ones), the chunked output projection with
// cross-entropy, and AdamW's multi-tensor kernels with the flat state in device memory. The packs of eight tensors are
// ILGPU's kernel parameter structs with each view as {pointer, length} (ViewPack8, SlotPack8 below).
using System.Runtime.InteropServices;
using IlgpuTune.Driver;
using IlgpuTune.Kernels;
using K = IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using ILGPU;

namespace IlgpuTune.Core;

internal sealed partial class DriverBackend
{
    // ---- attention (FlashAttention.cs, fp32) ----

    public AttentionSaved? AttentionForward(AttentionShape shape, Tensor q, Tensor k, Tensor v, Tensor? segments, bool segmentsSorted,
        Precision precision, Tensor o, bool keep)
    {
        var s = ManagedCpuBackend.Sizes(shape);
        bool half = precision.IsHalf && FlashAttentionHalf.Supports(s);
        var lse = Tensor.Empty(device, DType.F32, shape.Batch, shape.NumHeads, shape.Seq);
        Tensor qs, ks, vs;
        if (half)
        {
            (qs, ks, vs) = (Ops.CastRaw(q, precision.Matmul), Ops.CastRaw(k, precision.Matmul), Ops.CastRaw(v, precision.Matmul));
            var plan = FlashAttentionHalf.ForwardPlan(MmaAttention, precision.Half, s, segments is not null, segmentsSorted, qs.DevicePointer, ks.DevicePointer,
                vs.DevicePointer);
            if (s.Tokens > 0)
                Run(plan.Kernel, plan.Config, Args(plan.Kernel).Add(V(qs)).Add(V(ks)).Add(V(vs)).Add(Segments(segments)).Add(plan.Params).Add(V(o)).Add(V(lse)));
        }
        else
        {
            K.FlashAttention.Validate(s);
            (qs, ks, vs) = (q.Alias(), k.Alias(), v.Alias());
            if (s.Tokens > 0)
            {
                var dims = K.FlashAttention.ToDims(s);
                Run("flashattention.forward", K.FlashAttention.Config(_t, K.FlashAttention.Blocks(s, s.NumHeads, dims.BlockQ), dims.ForwardFloats),
                    Args("flashattention.forward").Add(V(q)).Add(V(k)).Add(V(v)).Add(Segments(segments)).Add(dims).Add(V(o)).Add(V(lse)));
            }
        }
        var saved = new AttentionSaved(shape, half ? "flash-half" : "flash", qs, ks, vs, o.Alias(), lse, segments?.Alias()) { SegmentsSorted = segmentsSorted };
        if (keep) return saved;
        saved.Dispose();
        return null;
    }

    public void AttentionBackward(AttentionSaved saved, Tensor dO, Tensor dQ, Tensor dK, Tensor dV)
    {
        var s = ManagedCpuBackend.Sizes(saved.Shape);
        var t = saved.Tensors;
        var (q, k, v, o, lse) = (t[0]!, t[1]!, t[2]!, t[3]!, t[4]!);
        var segments = Segments(t[5]);
        if (s.Tokens == 0) return;
        using var delta = Tensor.Empty(device, DType.F32, s.Batch, s.NumHeads, s.Seq);
        var dims = K.FlashAttention.ToDims(s);
        if (saved.Implementation == "flash-half")
        {
            bool segmented = t[5] is not null;
            var type = Precision.HalfOf(q.DType);
            using var dOHalf = Tensor.Empty(device, q.DType, dO.Shape);
            Cast(dO, dOHalf);
            RunImplicit("flashattention.backward.delta", s.ScoreRows, Implicit("flashattention.backward.delta", s.ScoreRows).Add(V(dO)).Add(V(o))
                .Add(dims).Add(V(delta)));
            var (qp, kp, vp, dp) = (q.DevicePointer, k.DevicePointer, v.DevicePointer, dOHalf.DevicePointer);
            var query = FlashAttentionHalf.QueryPlan(MmaAttention, type, s, segmented, saved.SegmentsSorted, qp, kp, vp, dp);
            Run(query.Kernel, query.Config, Args(query.Kernel).Add(V(q)).Add(V(k)).Add(V(v)).Add(V(dOHalf)).Add(segments).Add(V(lse)).Add(V(delta))
                .Add(query.Params).Add(V(dQ)));
            var keyValue = FlashAttentionHalf.KeyValuePlan(MmaAttention, type, s, segmented, saved.SegmentsSorted, qp, kp, vp, dp);
            Run(keyValue.Kernel, keyValue.Config, Args(keyValue.Kernel).Add(V(q)).Add(V(k)).Add(V(v)).Add(V(dOHalf)).Add(segments).Add(V(lse))
                .Add(V(delta)).Add(keyValue.Params).Add(V(dK)).Add(V(dV)));
            return;
        }
        RunImplicit("flashattention.backward.delta", s.ScoreRows, Implicit("flashattention.backward.delta", s.ScoreRows).Add(V(dO)).Add(V(o)).Add(dims)
            .Add(V(delta)));
        Run("flashattention.backward.keyvalue", K.FlashAttention.Config(_t, K.FlashAttention.Blocks(s, s.NumKvHeads, dims.BlockK), dims.KeyValueFloats),
            Args("flashattention.backward.keyvalue").Add(V(dO)).Add(V(q)).Add(V(k)).Add(V(v)).Add(V(lse)).Add(V(delta)).Add(segments).Add(dims)
                .Add(V(dK)).Add(V(dV)));
        Run("flashattention.backward.query", K.FlashAttention.Config(_t, K.FlashAttention.Blocks(s, s.NumHeads, dims.BlockQ), dims.QueryFloats),
            Args("flashattention.backward.query").Add(V(dO)).Add(V(q)).Add(V(k)).Add(V(v)).Add(V(lse)).Add(V(delta)).Add(segments).Add(dims).Add(V(dQ)));
    }

    // Without segment ids the kernels get an empty view (one segment per row); its address is never read.
    private static DeviceView Segments(Tensor? segments) => segments is null ? default : V(segments);

    // ---- output projection + cross-entropy, chunked over rows (as IlgpuBackend) ----

    public double LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunk, Precision precision, float gradScale, Tensor? dH, Tensor? dW)
    {
        int vocab = weight.Dim(0), hidden = weight.Dim(1), rows = (int)(h.Length / hidden);
        bool record = dH is not null || dW is not null;
        bool half = precision.IsHalf;
        var (dtype, type) = (precision.Matmul, half ? precision.Half : default);
        double sum = 0;
        using var hb = half ? Ops.CastRaw(h, dtype) : h.Alias();
        using var wb = !half || weight.DType == dtype ? weight.Alias() : Ops.CastRaw(weight, dtype);
        using var logits = Tensor.Empty(device, DType.F32, chunk, vocab);
        using var dLogits = half && record ? Tensor.Empty(device, dtype, chunk, vocab) : null;
        using var lossRows = Tensor.Empty(device, DType.F32, chunk);
        using var lse = Tensor.Empty(device, DType.F32, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var hc = V(hb, (long)r0 * hidden, (long)n * hidden);
            var lg = V(logits, 0, (long)n * vocab);
            var tg = V(targets, r0, n);
            if (half) Gemm(GemmLayout.NT, type, hc, V(wb), default, n, vocab, hidden, 1f, false, 0, lg);
            else MatMulF32(GemmLayout.NT, n, vocab, hidden, hc, V(wb), 1f, false, lg);
            CrossEntropyForward(lg, tg, n, vocab, V(lossRows), V(lse));
            foreach (var l in lossRows.ToFloatArray().AsSpan(0, n)) sum += l;
            if (!record) continue;
            var dhc = dH is null ? default : V(dH, (long)r0 * hidden, (long)n * hidden);
            if (half)
            {
                var dl = V(dLogits!, 0, (long)n * vocab);
                if (n > 0)
                    Run("crossentropy.backward_half", new KernelConfig(n, _t.RowGroupSize), Args("crossentropy.backward_half").Add(lg).Add(tg).Add(V(lse))
                        .Add(vocab).Add(gradScale).Add(type == HalfType.Float16 ? 1 : 0).Add(dl));
                if (dH is not null) Gemm(GemmLayout.NN, type, dl, V(wb), default, n, hidden, vocab, 1f, false, 0, dhc);
                if (dW is not null) Gemm(GemmLayout.TN, type, dl, hc, default, vocab, hidden, n, 1f, true, 0, V(dW));
            }
            else
            {
                CrossEntropyBackward(lg, tg, V(lse), n, vocab, gradScale, lg);
                if (dH is not null) MatMulF32(GemmLayout.NN, n, hidden, vocab, lg, V(weight), 1f, false, dhc);
                if (dW is not null) MatMulF32(GemmLayout.TN, vocab, hidden, n, lg, hc, 1f, true, V(dW));
            }
        }
        return sum;
    }

    // ---- optimizer (AdamW.cs): packs of eight tensors per launch ----

    [StructLayout(LayoutKind.Sequential)]
    private struct ViewPack8
    {
        public DeviceView X0, X1, X2, X3, X4, X5, X6, X7;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Slot
    {
        public DeviceView P, G, M, V;
        public long N;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SlotPack8
    {
        public Slot S0, S1, S2, S3, S4, S5, S6, S7;
    }

    // AdamW.Pack: unused slots repeat the first view, emptied.
    private static (ViewPack8 Pack, long Longest) Pack(IReadOnlyList<Tensor> views, int start)
    {
        Span<DeviceView> v = stackalloc DeviceView[K.AdamW.PackSize];
        long longest = 0;
        for (int s = 0; s < v.Length; s++)
        {
            v[s] = start + s < views.Count ? V(views[start + s]) : V(views[start]) with { Length = 0 };
            longest = Math.Max(longest, v[s].Length);
        }
        return (new ViewPack8 { X0 = v[0], X1 = v[1], X2 = v[2], X3 = v[3], X4 = v[4], X5 = v[5], X6 = v[6], X7 = v[7] }, longest);
    }

    public bool UnscaleAndCheck(IReadOnlyList<Tensor> grads, float factor)
    {
        using var flag = Tensor.Zeros(device, DType.F32, 1);
        for (int start = 0; start < grads.Count; start += K.AdamW.PackSize)
        {
            var (pack, longest) = Pack(grads, start);
            if (longest > 0) Run("adamw.unscale.multi", Launch.Flat(_t, longest), Args("adamw.unscale.multi").Add(pack).Add(factor).Add(V(flag)));
        }
        return flag.Item() != 0f;
    }

    public double[] SumsOfSquares(IReadOnlyList<Tensor> grads)
    {
        var sums = new double[grads.Count];
        int per = K.AdamW.PartialsPerTensor(_t);
        using var partials = Tensor.Empty(device, DType.F32, Math.Max(grads.Count * per, 1));
        for (int start = 0; start < grads.Count; start += K.AdamW.PackSize)
        {
            var (pack, _) = Pack(grads, start);
            long count = Math.Min(K.AdamW.PackSize, grads.Count - start) * (long)per;
            Run("adamw.sumsq.multi", new KernelConfig(per, _t.RowGroupSize), Args("adamw.sumsq.multi").Add(pack).Add(V(partials, (long)start * per, count)));
        }
        var host = partials.ToFloatArray();
        for (int i = 0; i < grads.Count; i++)
            for (int j = 0; j < per; j++) sums[i] += host[i * per + j];
        return sums;
    }

    public IAdamWState CreateAdamWState(long total, bool paged, long pagedChunkElements) =>
        paged ? throw NotYet("paged adamw") : new DriverAdamWState(this, device, total);

    private sealed class DriverAdamWState : IAdamWState
    {
        private readonly DriverBackend _b;
        private readonly Tensor _avg, _avgSq;

        public DriverAdamWState(DriverBackend backend, Device device, long total)
        {
            _b = backend;
            int n = checked((int)Math.Max(total, 1));
            _avg = Tensor.Zeros(device, DType.F32, n);
            _avgSq = Tensor.Zeros(device, DType.F32, n);
        }

        public bool IsPaged => false;

        public void Step(IReadOnlyList<AdamWGroup> groups)
        {
            var slots = new Slot[K.AdamW.PackSize];
            foreach (var (hyper, members) in groups)
            {
                if (hyper.Step < 1) throw new ArgumentOutOfRangeException(nameof(groups), hyper.Step, "AdamW step count starts at 1");
                var c = new K.AdamW.Coefficients(hyper);
                for (int start = 0; start < members.Count; start += K.AdamW.PackSize)
                {
                    long longest = 0;
                    for (int s = 0; s < slots.Length; s++)
                    {
                        if (start + s < members.Count)
                        {
                            var (p, offset) = members[start + s];
                            slots[s] = new Slot { P = V(p), G = V(p.Grad!), M = V(_avg, offset, p.Length), V = V(_avgSq, offset, p.Length), N = p.Length };
                        }
                        else
                        {
                            var e = V(members[start].Param) with { Length = 0 };
                            slots[s] = new Slot { P = e, G = e, M = e, V = e, N = 0 };
                        }
                        longest = Math.Max(longest, slots[s].N);
                    }
                    if (longest == 0) continue;
                    var pack = new SlotPack8 { S0 = slots[0], S1 = slots[1], S2 = slots[2], S3 = slots[3], S4 = slots[4], S5 = slots[5], S6 = slots[6], S7 = slots[7] };
                    _b.Run("adamw.step.multi", Launch.Flat(_b._t, longest), _b.Args("adamw.step.multi").Add(pack).Add(c));
                }
            }
        }

        public void Export(float[] avg, float[] avgSq)
        {
            if (avg.Length == 0) return;
            _avg.ToFloatArray().AsSpan(0, avg.Length).CopyTo(avg);
            _avgSq.ToFloatArray().AsSpan(0, avgSq.Length).CopyTo(avgSq);
        }

        public void Import(float[] avg, float[] avgSq)
        {
            if (avg.Length == 0) return;
            var a = new float[_avg.Length];
            var b = new float[_avgSq.Length];
            avg.CopyTo(a, 0);
            avgSq.CopyTo(b, 0);
            _avg.CopyFrom(a);
            _avgSq.CopyFrom(b);
        }

        public void Dispose()
        {
            _avg.Dispose();
            _avgSq.Dispose();
        }
    }
}
