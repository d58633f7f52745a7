using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// Output projection fused with the log-probability of each row's target, chunked over rows: h[rows, hidden],
    /// weight[vocab, hidden], targets I32[rows] (shifted; -100 ignored) -> logp[rows] = log_softmax(h·Wᵀ)[r, targets[r]], 0
    /// where ignored; [rows, vocab] logits are never all resident. The preference losses sum logp per sequence. Backward
    /// recomputes each chunk's logits (nothing vocab-sized is kept between forward and backward). 16-bit matmul
    /// precision: tensor-core products as in <see cref="LinearCrossEntropy"/>; the weight may then be a frozen BF16/F16 tensor.
    /// </summary>
    public static Tensor LinearLogProbs(Tensor h, Tensor weight, Tensor targets, int chunkTokens = 0)
    {
        const string op = "linear_log_probs";
        var (dev, precision, vocab, hidden, rows) = CheckOutputProjection(op, h, weight, targets);
        int chunk = Math.Max(1, chunkTokens > 0 ? Math.Min(chunkTokens, rows) : ChunkFor(vocab, rows));
        var logp = Tensor.Zeros(dev, DType.F32, rows);
        if (rows > 0) dev.Backend.LinearLogProbs(h, weight, targets, chunk, precision, logp);
        if (!Tape.IsRecording(h, weight)) return logp;
        var (sh, sw, st) = (h.Alias(), weight.Alias(), targets.Alias());
        Tape.Record(op, [h, weight, targets], [logp], ctx =>
        {
            var dLogp = ctx.GradOutput()!;
            var dH = ctx.NeedsGrad(0) ? EmptyF32(dev, sh.Shape) : null;
            var dW = ctx.NeedsGrad(1) ? Tensor.Zeros(dev, DType.F32, vocab, hidden) : null;
            dev.Backend.LinearLogProbsBackward(sh, sw, st, dLogp, chunk, precision, dH, dW);
            if (dH is not null) ctx.AddGrad(0, dH);
            if (dW is not null) ctx.AddGrad(1, dW);
        }, sh, sw, st);
        return logp;
    }
}
