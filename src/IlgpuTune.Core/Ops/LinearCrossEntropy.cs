using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>Most tokens per chunk of <see cref="LinearCrossEntropy"/>; large vocabularies get fewer (see ChunkFor).</summary>
    public const int DefaultCrossEntropyChunk = 1024;

    // Resident fp32 logits per chunk: 64 Mi floats = 256 MiB (vocab 151 936: 384 tokens a chunk).
    private const long CrossEntropyChunkElements = 64L << 20;

    private static int ChunkFor(int vocab, int rows) =>
        Math.Min(rows, (int)Math.Clamp(CrossEntropyChunkElements / vocab / 64 * 64, 64, DefaultCrossEntropyChunk));

    /// <summary>
    /// Output projection fused with the mean cross-entropy, chunked over tokens: h[rows, hidden], weight[vocab, hidden],
    /// targets I32[rows] (shifted; -100 ignored) -> scalar loss, without ever holding [rows, vocab] logits. Each chunk's logits
    /// are turned into dLogits in place right away, so the gradients (dH, dWeight, pre-scaled by 1/count) are computed in the
    /// forward pass and backward only scales them by dLoss. Same numbers as Linear + CrossEntropy. On an ILGPU device with
    /// 16-bit matmul precision the three products run on tensor cores (h, weight and dLogits rounded to 16 bits, as Linear
    /// does); the weight may then be a frozen BF16/F16 tensor. chunkTokens 0 picks a chunk that keeps 256 MiB of logits.
    /// </summary>
    public static Tensor LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunkTokens = 0)
    {
        const string op = "linear_cross_entropy";
        RequireF32(op, h, "h");
        var dev = h.Device;
        bool half = !dev.IsCpu && dev.MatmulPrecision != MatmulPrecision.F32;
        var halfDType = dev.MatmulPrecision == MatmulPrecision.F16 ? DType.F16 : DType.BF16;
        if (weight.DType != DType.F32 && (!half || weight.DType != halfDType || weight.RequiresGrad))
            throw new ArgumentException($"{op}: weight {weight.Name} is {weight.DType}; a 16-bit weight needs an ILGPU device with the " +
                "same matmul precision and must be frozen");
        int vocab = weight.Dim(0), hidden = weight.Dim(1);
        int rows = (int)(h.Length / hidden);
        if (h.Dim(-1) != hidden || targets.Length != rows || targets.DType != DType.I32)
            throw new ArgumentException($"{op}: h {ShapeText(h.Shape)}, weight {ShapeText(weight.Shape)}, targets {ShapeText(targets.Shape)} do not fit");
        int count = targets.ToIntArray().Count(t => t != IgnoreIndex);
        bool record = count > 0 && Tape.IsRecording(h, weight);
        bool needH = record && h.RequiresGrad, needW = record && weight.RequiresGrad;
        var dH = needH ? EmptyF32(dev, h.Shape) : null;
        var dW = needW ? Tensor.Zeros(dev, DType.F32, vocab, hidden) : null;
        float gradScale = count == 0 ? 0f : 1f / count;

        int chunk = Math.Max(1, chunkTokens > 0 ? Math.Min(chunkTokens, rows) : ChunkFor(vocab, rows));
        double sum = half
            ? LinearCrossEntropyHalf(h, weight, targets, rows, hidden, vocab, chunk, halfDType, record, gradScale, dH, dW)
            : LinearCrossEntropyF32(h, weight, targets, rows, hidden, vocab, chunk, record, gradScale, dH, dW);
        var loss = Tensor.FromArray(dev, [count == 0 ? 0f : (float)(sum / count)]);
        if (!record) return loss;
        var saved = new[] { dH, dW }.OfType<Tensor>().ToArray();
        Tape.Record(op, [h, weight, targets], [loss], ctx =>
        {
            float dLoss = ctx.GradOutput()!.Item();
            if (dH is not null) ctx.AddGrad(0, ScaleRaw(dH, dLoss));
            if (dW is not null) ctx.AddGrad(1, ScaleRaw(dW, dLoss));
        }, saved);
        return loss;
    }

    // Returns the summed loss; fills dH (overwritten per chunk) and dW (accumulated) when given.
    private static double LinearCrossEntropyF32(Tensor h, Tensor weight, Tensor targets, int rows, int hidden, int vocab, int chunk,
        bool record, float gradScale, Tensor? dH, Tensor? dW)
    {
        var dev = h.Device;
        double sum = 0;
        using (var logits = EmptyF32(dev, chunk, vocab))
        using (var lossRows = EmptyF32(dev, chunk))
        using (var lse = EmptyF32(dev, chunk))
            for (int r0 = 0; r0 < rows; r0 += chunk)
            {
                int n = Math.Min(chunk, rows - r0);
                if (dev.IsCpu)
                {
                    var hc = h.F32.Slice(r0 * hidden, n * hidden);
                    var lg = logits.F32[..(n * vocab)];
                    var tg = targets.I32.Slice(r0, n);
                    MatMul.NTCpu<float>(hc, weight.F32, n, vocab, hidden, 1f, false, lg);
                    Kernels.CrossEntropy.ForwardCpu<float>(lg, tg, n, vocab, lossRows.F32, lse.F32);
                    foreach (var l in lossRows.F32[..n]) sum += l;
                    if (!record) continue;
                    Kernels.CrossEntropy.BackwardCpu<float>(lg, tg, lse.F32, n, vocab, gradScale, lg);
                    if (dH is not null) MatMul.NNCpu<float>(lg, weight.F32, n, hidden, vocab, 1f, false, dH.F32.Slice(r0 * hidden, n * hidden));
                    if (dW is not null) MatMul.TNCpu<float>(lg, hc, vocab, hidden, n, 1f, true, dW.F32);
                }
                else
                {
                    var k = K(h);
                    var hc = h.F32View.SubView((long)r0 * hidden, (long)n * hidden);
                    var lg = logits.F32View.SubView(0, (long)n * vocab);
                    var tg = targets.I32View.SubView(r0, n);
                    MatMul.NT(k, hc, weight.F32View, n, vocab, hidden, 1f, false, lg);
                    Kernels.CrossEntropy.Forward(k, lg, tg, n, vocab, lossRows.F32View, lse.F32View);
                    foreach (var l in lossRows.ToFloatArray().AsSpan(0, n)) sum += l;
                    if (!record) continue;
                    Kernels.CrossEntropy.Backward(k, lg, tg, lse.F32View, n, vocab, gradScale, lg);
                    if (dH is not null) MatMul.NN(k, lg, weight.F32View, n, hidden, vocab, 1f, false, dH.F32View.SubView((long)r0 * hidden, (long)n * hidden));
                    if (dW is not null) MatMul.TN(k, lg, hc, vocab, hidden, n, 1f, true, dW.F32View);
                }
            }
        return sum;
    }

    // Tensor-core path: logits = h·Wᵀ in fp32 from 16-bit operands, cross-entropy in fp32, dLogits written in 16 bits by the
    // backward kernel, then dH = dLogits·W and dW += dLogitsᵀ·h on tensor cores.
    private static double LinearCrossEntropyHalf(Tensor h, Tensor weight, Tensor targets, int rows, int hidden, int vocab, int chunk,
        DType dtype, bool record, float gradScale, Tensor? dH, Tensor? dW)
    {
        var dev = h.Device;
        var k = K(h);
        var half = dtype == DType.BF16 ? HalfType.BFloat16 : HalfType.Float16;
        double sum = 0;
        using var hb = CastRaw(h, dtype);
        using var wb = weight.DType == dtype ? weight.Alias() : CastRaw(weight, dtype);
        using var logits = EmptyF32(dev, chunk, vocab);
        using var dLogits = record ? Tensor.Empty(dev, dtype, chunk, vocab) : null;
        using var lossRows = EmptyF32(dev, chunk);
        using var lse = EmptyF32(dev, chunk);
        for (int r0 = 0; r0 < rows; r0 += chunk)
        {
            int n = Math.Min(chunk, rows - r0);
            var hc = hb.View<ushort>().SubView((long)r0 * hidden, (long)n * hidden);
            var lg = logits.F32View.SubView(0, (long)n * vocab);
            var tg = targets.I32View.SubView(r0, n);
            Gemm.NT(k, half, hc, wb.View<ushort>(), default, n, vocab, hidden, 1f, false, lg);
            Kernels.CrossEntropy.Forward(k, lg, tg, n, vocab, lossRows.F32View, lse.F32View);
            foreach (var l in lossRows.ToFloatArray().AsSpan(0, n)) sum += l;
            if (dLogits is null) continue;
            var dl = dLogits.View<ushort>().SubView(0, (long)n * vocab);
            Kernels.CrossEntropy.BackwardHalf(k, lg, tg, lse.F32View, n, vocab, gradScale, half, dl);
            if (dH is not null)
                Gemm.NN(k, half, dl, wb.View<ushort>(), default, n, hidden, vocab, 1f, false, dH.F32View.SubView((long)r0 * hidden, (long)n * hidden));
            if (dW is not null) Gemm.TN(k, half, dl, hc, default, vocab, hidden, n, 1f, true, dW.F32View);
        }
        return sum;
    }
}
