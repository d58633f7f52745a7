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
        var (dev, precision, vocab, hidden, rows) = CheckOutputProjection(op, h, weight, targets);
        int count = targets.ToIntArray().Count(t => t != IgnoreIndex);
        bool record = count > 0 && Tape.IsRecording(h, weight);
        bool needH = record && h.RequiresGrad, needW = record && weight.RequiresGrad;
        var dH = needH ? EmptyF32(dev, h.Shape) : null;
        var dW = needW ? Tensor.Zeros(dev, DType.F32, vocab, hidden) : null;
        float gradScale = count == 0 ? 0f : 1f / count;

        int chunk = Math.Max(1, chunkTokens > 0 ? Math.Min(chunkTokens, rows) : ChunkFor(vocab, rows));
        double sum = dev.Backend.LinearCrossEntropy(h, weight, targets, chunk, precision, gradScale, dH, dW);
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

    // The fused output-projection ops' shared contract: h F32 [rows, hidden], weight [vocab, hidden] (F32, or a frozen
    // 16-bit tensor of the device's matmul precision or one the managed CPU path widens), targets I32 [rows].
    private static (Device Dev, Precision Precision, int Vocab, int Hidden, int Rows) CheckOutputProjection(string op, Tensor h, Tensor weight, Tensor targets)
    {
        RequireF32(op, h, "h");
        var dev = h.Device;
        var precision = dev.Matmuls;
        if (weight.DType != DType.F32 && !TakesFrozenHalf(dev, weight))
            throw new ArgumentException($"{op}: weight {weight.Name} is {weight.DType}; a 16-bit weight needs an ILGPU device with the " +
                "same matmul precision (or the managed CPU path) and must be frozen");
        int vocab = weight.Dim(0), hidden = weight.Dim(1);
        int rows = (int)(h.Length / hidden);
        if (h.Dim(-1) != hidden || targets.Length != rows || targets.DType != DType.I32)
            throw new ArgumentException($"{op}: h {ShapeText(h.Shape)}, weight {ShapeText(weight.Shape)}, targets {ShapeText(targets.Shape)} do not fit");
        return (dev, precision, vocab, hidden, rows);
    }
}
