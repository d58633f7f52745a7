using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>y[r, c] = x[r, index[c]]: x[rows, inCols], index I32[outCols] -> y[rows, outCols]. Used to split fused projections.</summary>
    public static Tensor ColumnGather(Tensor x, Tensor index)
    {
        const string op = "column_gather";
        RequireF32(op, x, "x");
        if (index.DType != DType.I32 || index.Rank != 1) throw new ArgumentException($"{op}: index must be I32 [outCols]");
        int inCols = x.Dim(-1), outCols = index.Dim(0);
        int rows = (int)(x.Length / inCols);
        var y = EmptyF32(x.Device, WithLast(x.Shape, outCols));
        if (x.Device.IsCpu) Kernels.ColumnGather.ForwardCpu<float>(x.F32, index.I32, rows, inCols, outCols, y.F32);
        else Kernels.ColumnGather.Forward(K(x), x.F32View, index.I32View, rows, inCols, outCols, y.F32View);
        if (Tape.IsRecording(x))
        {
            var si = index.Alias();
            var inShape = x.Shape;
            Tape.Record(op, [x], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dX = Tensor.Zeros(dY.Device, DType.F32, inShape);
                if (dY.Device.IsCpu) Kernels.ColumnGather.BackwardCpu<float>(dY.F32, si.I32, rows, inCols, outCols, dX.F32);
                else Kernels.ColumnGather.Backward(K(dY), dY.F32View, si.I32View, rows, inCols, outCols, dX.F32View);
                ctx.AddGrad(0, dX);
            }, si);
        }
        return y;
    }
}
