using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// HF RMSNorm over the last dim: x[..., dim], weight[dim] -> y[..., dim]; saves rstd[rows]. <paramref name="unitOffset"/>:
    /// Gemma's norm, x * rsqrt(mean(x²) + eps) * (1 + weight), all in fp32 (the weight stored is w, the scale used 1 + w).
    /// Per-head q/k norms (Qwen3, Gemma 3) are this op on x reshaped to [tokens*heads, headDim] with weight[headDim].
    /// </summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, float eps, bool unitOffset = false)
    {
        const string op = "rmsnorm";
        RequireF32(op, x, "x");
        RequireF32(op, weight, "weight");
        if (unitOffset)
        {
            // (1 + w) in fp32 is what Gemma3RMSNorm multiplies by; d(1 + w)/dw = 1, so the tape's add passes dW through.
            using var one = Tensor.Empty(weight.Device, DType.F32, weight.Shape);
            B(weight).Fill(one, 1f);
            using var scale = Add(weight, one);
            return RmsNorm(x, scale, eps);
        }
        int dim = weight.Dim(0);
        if (x.Dim(-1) != dim) throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} does not fit weight {weight.Name} [{dim}]");
        int rows = (int)(x.Length / dim);
        var y = EmptyF32(x.Device, x.Shape);
        var rstd = EmptyF32(x.Device, rows);
        B(x).RmsNormForward(x, weight, eps, y, rstd);

        if (!Tape.IsRecording(x, weight))
        {
            rstd.Dispose();
            return y;
        }
        var sx = x.Alias();
        var sw = weight.Alias();
        Tape.Record(op, [x, weight], [y], ctx =>
        {
            var dY = ctx.GradOutput()!;
            var dev = dY.Device;
            var dX = EmptyF32(dev, sx.Shape);
            var dW = Tensor.Zeros(dev, DType.F32, dim);
            dev.Backend.RmsNormBackward(dY, sx, sw, rstd, dX, dW);
            ctx.AddGrad(0, dX);
            ctx.AddGrad(1, dW);
        }, sx, sw, rstd);
        return y;
    }
}
