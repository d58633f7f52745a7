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
        var y = EmptyF32(x.Device, WithLast(x.Shape, outCols));
        B(x).ColumnGatherForward(x, index, y);
        if (Tape.IsRecording(x))
        {
            var si = index.Alias();
            var inShape = x.Shape;
            Tape.Record(op, [x], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dX = Tensor.Zeros(dY.Device, DType.F32, inShape);
                B(dY).ColumnGatherBackward(dY, si, dX);
                ctx.AddGrad(0, dX);
            }, si);
        }
        return y;
    }
}
