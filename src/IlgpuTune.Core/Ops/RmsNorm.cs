using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>HF RMSNorm over the last dim: x[..., dim], weight[dim] -> y[..., dim]; saves rstd[rows].</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, float eps)
    {
        const string op = "rmsnorm";
        RequireF32(op, x, "x");
        RequireF32(op, weight, "weight");
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
