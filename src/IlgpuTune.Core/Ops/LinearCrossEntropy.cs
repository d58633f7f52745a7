using IlgpuTune.Kernels;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>Tokens per chunk of <see cref="LinearCrossEntropy"/>: bounds the resident logits to chunk × vocab floats.</summary>
    public const int DefaultCrossEntropyChunk = 1024;

    /// <summary>
    /// Output projection fused with the mean cross-entropy, chunked over tokens: h[rows, hidden], weight[vocab, hidden],
    /// targets I32[rows] (shifted; -100 ignored) -> scalar loss, without ever holding [rows, vocab] logits. Each chunk's logits
    /// are turned into dLogits in place right away, so the gradients (dH, dWeight, pre-scaled by 1/count) are computed in the
    /// forward pass and backward only scales them by dLoss. Same numbers as Linear + CrossEntropy.
    /// </summary>
    public static Tensor LinearCrossEntropy(Tensor h, Tensor weight, Tensor targets, int chunkTokens = DefaultCrossEntropyChunk)
    {
        const string op = "linear_cross_entropy";
        RequireF32(op, h, "h");
        RequireF32(op, weight, "weight");
        int vocab = weight.Dim(0), hidden = weight.Dim(1);
        int rows = (int)(h.Length / hidden);
        if (h.Dim(-1) != hidden || targets.Length != rows || targets.DType != DType.I32)
            throw new ArgumentException($"{op}: h {ShapeText(h.Shape)}, weight {ShapeText(weight.Shape)}, targets {ShapeText(targets.Shape)} do not fit");
        var dev = h.Device;
        int count = targets.ToIntArray().Count(t => t != IgnoreIndex);
        bool record = count > 0 && Tape.IsRecording(h, weight);
        bool needH = record && h.RequiresGrad, needW = record && weight.RequiresGrad;
        var dH = needH ? EmptyF32(dev, h.Shape) : null;
        var dW = needW ? Tensor.Zeros(dev, DType.F32, vocab, hidden) : null;
        float gradScale = count == 0 ? 0f : 1f / count;

        int chunk = Math.Max(1, Math.Min(chunkTokens, rows));
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
}
