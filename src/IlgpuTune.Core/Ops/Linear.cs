using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// nn.Linear: x[..., in] · weight[out, in]ᵀ + bias[out] -> y[..., out].
    /// Backward: dX = dY · W, dW += dYᵀ · x, dBias += Σ_rows dY.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        const string op = "linear";
        RequireF32(op, x, "x");
        RequireSameDevice(op, x, weight);
        // A 16-bit weight is a frozen base: for the tensor-core path of the same precision, or widened inside fp32 products.
        if (weight.DType != DType.F32 && !TakesFrozenHalf(x.Device, weight))
            throw new ArgumentException($"{op}: weight {weight.Name} is {weight.DType}; 16-bit weights need an ILGPU device with " +
                $"matmul precision {weight.DType} (or the managed CPU path) and must be frozen");
        if (weight.Rank != 2 || x.Dim(-1) != weight.Dim(1))
            throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} does not fit weight {weight.Name} {ShapeText(weight.Shape)}");
        int outF = weight.Dim(0), inF = weight.Dim(1);
        int rows = (int)(x.Length / inF);
        if (bias is not null && (bias.Rank != 1 || bias.Dim(0) != outF))
            throw new ArgumentException($"{op}: bias {bias.Name} {ShapeText(bias.Shape)} does not fit [{outF}]");

        if (x.Device.Matmuls.IsHalf) return LinearHalf(x, weight, bias, rows, inF, outF);
        var y = EmptyF32(x.Device, WithLast(x.Shape, outF));
        B(x).MatMul(GemmLayout.NT, new(rows, outF, inF), x, weight, bias, 1f, false, y);

        if (Tape.IsRecording(x, weight, bias))
        {
            var sx = x.Alias();
            var sw = weight.Alias();
            var inShape = x.Shape;
            Tape.Record(op, [x, weight, bias], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dev = dY.Device;
                if (ctx.NeedsGrad(0))
                {
                    var dX = EmptyF32(dev, inShape);
                    dev.Backend.MatMul(GemmLayout.NN, new(rows, inF, outF), dY, sw, null, 1f, false, dX);
                    ctx.AddGrad(0, dX);
                }
                if (ctx.NeedsGrad(1))
                {
                    var dW = EmptyF32(dev, outF, inF);
                    dev.Backend.MatMul(GemmLayout.TN, new(outF, inF, rows), dY, sx, null, 1f, false, dW);
                    ctx.AddGrad(1, dW);
                }
                if (ctx.NeedsGrad(2))
                {
                    var dB = Tensor.Zeros(dev, DType.F32, outF);
                    dev.Backend.SumRows(dY, dB);
                    ctx.AddGrad(2, dB);
                }
            }, sx, sw);
        }
        return y;
    }

    /// <summary>A frozen BF16/F16 weight the device multiplies as it is: tensor cores of that precision, or fp32 products
    /// that widen it (the managed CPU path).</summary>
    internal static bool TakesFrozenHalf(Device dev, Tensor weight) =>
        weight.DType is DType.BF16 or DType.F16 && !weight.RequiresGrad &&
        (dev.Matmuls.Matmul == weight.DType || (!dev.Matmuls.IsHalf && dev.Caps.WidensHalfWeights));

    // Tensor-core path: x and W rounded to bf16 / fp16, fp32 products and output. Saves the 16-bit copies (half of fp32)
    // for backward, where dY is rounded too: dX = dY·W and dW = dYᵀ·x on tensor cores, dBias from the fp32 dY.
    private static Tensor LinearHalf(Tensor x, Tensor weight, Tensor? bias, int rows, int inF, int outF)
    {
        var backend = B(x);
        var dtype = x.Device.Matmuls.Matmul;
        var y = EmptyF32(x.Device, WithLast(x.Shape, outF));
        var xb = SharedCast(x, dtype, keep: false);
        var wb = weight.DType == dtype ? weight.Alias() : CastRaw(weight, dtype);
        backend.MatMul(GemmLayout.NT, new(rows, outF, inF), xb, wb, bias, 1f, false, y);
        if (!Tape.IsRecording(x, weight, bias))
        {
            xb.Dispose();
            wb.Dispose();
            return y;
        }
        var inShape = x.Shape;
        Tape.Record("linear", [x, weight, bias], [y], ctx =>
        {
            var dY = ctx.GradOutput()!;
            var dev = dY.Device;
            using var dYb = CastRaw(dY, dtype);
            if (ctx.NeedsGrad(0))
            {
                var dX = EmptyF32(dev, inShape);
                backend.MatMul(GemmLayout.NN, new(rows, inF, outF), dYb, wb, null, 1f, false, dX);
                ctx.AddGrad(0, dX);
            }
            if (ctx.NeedsGrad(1))
            {
                var dW = EmptyF32(dev, outF, inF);
                backend.MatMul(GemmLayout.TN, new(outF, inF, rows), dYb, xb, null, 1f, false, dW);
                ctx.AddGrad(1, dW);
            }
            if (ctx.NeedsGrad(2))
            {
                var dB = Tensor.Zeros(dev, DType.F32, outF);
                backend.SumRows(dY, dB);
                ctx.AddGrad(2, dB);
            }
        }, xb, wb);
        return y;
    }
}
