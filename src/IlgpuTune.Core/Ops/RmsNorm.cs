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
        if (x.Device.IsCpu) Kernels.RmsNorm.ForwardCpu<float>(x.F32, weight.F32, rows, dim, eps, y.F32, rstd.F32);
        else Kernels.RmsNorm.Forward(K(x), x.F32View, weight.F32View, rows, dim, eps, y.F32View, rstd.F32View);

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
            if (dev.IsCpu) Kernels.RmsNorm.BackwardCpu<float>(dY.F32, sx.F32, sw.F32, rstd.F32, rows, dim, dX.F32, dW.F32);
            else Kernels.RmsNorm.Backward(K(dY), dY.F32View, sx.F32View, sw.F32View, rstd.F32View, rows, dim, dX.F32View, dW.F32View);
            ctx.AddGrad(0, dX);
            ctx.AddGrad(1, dW);
        }, sx, sw, rstd);
        return y;
    }
}
