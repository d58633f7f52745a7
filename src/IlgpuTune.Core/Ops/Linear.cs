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
        if (weight.DType != DType.F32)
        {
            // A 16-bit weight is a frozen base for the tensor-core path of the same precision.
            var want = weight.DType switch { DType.BF16 => MatmulPrecision.BF16, DType.F16 => MatmulPrecision.F16, _ => MatmulPrecision.F32 };
            if (x.Device.IsCpu || x.Device.MatmulPrecision != want || want == MatmulPrecision.F32 || weight.RequiresGrad)
                throw new ArgumentException($"{op}: weight {weight.Name} is {weight.DType}; 16-bit weights need an ILGPU device with " +
                    $"MatmulPrecision {want} and must be frozen");
        }
        if (weight.Rank != 2 || x.Dim(-1) != weight.Dim(1))
            throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} does not fit weight {weight.Name} {ShapeText(weight.Shape)}");
        int outF = weight.Dim(0), inF = weight.Dim(1);
        int rows = (int)(x.Length / inF);
        if (bias is not null && (bias.Rank != 1 || bias.Dim(0) != outF))
            throw new ArgumentException($"{op}: bias {bias.Name} {ShapeText(bias.Shape)} does not fit [{outF}]");

        if (!x.Device.IsCpu && x.Device.MatmulPrecision != MatmulPrecision.F32) return LinearHalf(x, weight, bias, rows, inF, outF);
        var y = EmptyF32(x.Device, WithLast(x.Shape, outF));
        if (x.Device.IsCpu)
        {
            MatMul.NTCpu<float>(x.F32, weight.F32, rows, outF, inF, 1f, false, y.F32);
            if (bias is not null) Elementwise.AddBiasCpu<float>(y.F32, bias.F32, rows, outF, y.F32);
        }
        else
        {
            var k = K(x);
            MatMul.NT(k, x.F32View, weight.F32View, rows, outF, inF, 1f, false, y.F32View);
            if (bias is not null) Elementwise.AddBias(k, y.F32View, bias.F32View, rows, outF, y.F32View);
        }

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
                    if (dev.IsCpu) MatMul.NNCpu<float>(dY.F32, sw.F32, rows, inF, outF, 1f, false, dX.F32);
                    else MatMul.NN(K(dY), dY.F32View, sw.F32View, rows, inF, outF, 1f, false, dX.F32View);
                    ctx.AddGrad(0, dX);
                }
                if (ctx.NeedsGrad(1))
                {
                    var dW = EmptyF32(dev, outF, inF);
                    if (dev.IsCpu) MatMul.TNCpu<float>(dY.F32, sx.F32, outF, inF, rows, 1f, false, dW.F32);
                    else MatMul.TN(K(dY), dY.F32View, sx.F32View, outF, inF, rows, 1f, false, dW.F32View);
                    ctx.AddGrad(1, dW);
                }
                if (ctx.NeedsGrad(2))
                {
                    var dB = Tensor.Zeros(dev, DType.F32, outF);
                    if (dev.IsCpu) Elementwise.SumRowsCpu<float>(dY.F32, rows, outF, dB.F32);
                    else Elementwise.SumRows(K(dY), dY.F32View, rows, outF, dB.F32View);
                    ctx.AddGrad(2, dB);
                }
            }, sx, sw);
        }
        return y;
    }

    // Tensor-core path: x and W rounded to bf16 / fp16, fp32 products and output. Saves the 16-bit copies (half of fp32)
    // for backward, where dY is rounded too: dX = dY·W and dW = dYᵀ·x on tensor cores, dBias from the fp32 dY.
    private static Tensor LinearHalf(Tensor x, Tensor weight, Tensor? bias, int rows, int inF, int outF)
    {
        var k = K(x);
        var (half, dtype) = x.Device.MatmulPrecision == MatmulPrecision.BF16 ? (HalfType.BFloat16, DType.BF16) : (HalfType.Float16, DType.F16);
        var y = EmptyF32(x.Device, WithLast(x.Shape, outF));
        var xb = CastRaw(x, dtype);
        var wb = weight.DType == dtype ? weight.Alias() : CastRaw(weight, dtype);
        Gemm.NT(k, half, xb.View<ushort>(), wb.View<ushort>(), bias is null ? default : bias.F32View, rows, outF, inF, 1f, false, y.F32View);
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
                Gemm.NN(k, half, dYb.View<ushort>(), wb.View<ushort>(), default, rows, inF, outF, 1f, false, dX.F32View);
                ctx.AddGrad(0, dX);
            }
            if (ctx.NeedsGrad(1))
            {
                var dW = EmptyF32(dev, outF, inF);
                Gemm.TN(k, half, dYb.View<ushort>(), xb.View<ushort>(), default, outF, inF, rows, 1f, false, dW.F32View);
                ctx.AddGrad(1, dW);
            }
            if (ctx.NeedsGrad(2))
            {
                var dB = Tensor.Zeros(dev, DType.F32, outF);
                Elementwise.SumRows(k, dY.F32View, rows, outF, dB.F32View);
                ctx.AddGrad(2, dB);
            }
        }, xb, wb);
        return y;
    }
}
