using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    public const int IgnoreIndex = -100;

    /// <summary>
    /// Mean cross-entropy over supervised rows: logits[rows, vocab], targets I32[rows] (already shifted; -100 = ignored)
    /// -> scalar loss. With no supervised row the loss is 0 and no gradient flows (torch would return NaN).
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets)
    {
        const string op = "cross_entropy";
        RequireF32(op, logits, "logits");
        if (targets.DType != DType.I32) throw new ArgumentException($"{op}: targets must be I32, are {targets.DType}");
        int vocab = logits.Dim(-1);
        int rows = (int)(logits.Length / vocab);
        if (targets.Length != rows) throw new ArgumentException($"{op}: {targets.Length} targets for {rows} rows of logits");
        var dev = logits.Device;
        var hostTargets = targets.ToIntArray();
        int count = hostTargets.Count(t => t != IgnoreIndex);

        using var lossPerRow = EmptyF32(dev, rows);
        var lse = EmptyF32(dev, rows);
        dev.Backend.CrossEntropyForward(logits, targets, lossPerRow, lse);
        double sum = 0;
        foreach (var l in lossPerRow.ToFloatArray()) sum += l;
        var loss = Tensor.FromArray(dev, [count == 0 ? 0f : (float)(sum / count)]);

        if (count == 0 || !Tape.IsRecording(logits))
        {
            lse.Dispose();
            return loss;
        }
        var sl = logits.Alias();
        var st = targets.Alias();
        Tape.Record(op, [logits, targets], [loss], ctx =>
        {
            float gradScale = ctx.GradOutput()!.Item() / count;
            var dLogits = EmptyF32(dev, sl.Shape);
            dev.Backend.CrossEntropyBackward(sl, st, lse, gradScale, dLogits);
            ctx.AddGrad(0, dLogits);
        }, sl, st, lse);
        return loss;
    }
}
