using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// bitsandbytes' Linear4bit / MatMul4Bit: x[..., in] · dequant(W)[out, in]ᵀ + bias[out] -> y[..., out], W frozen.
    /// Backward: dX = dY · dequant(W) (W dequantized again: the dense weight lives only during one product, which is the
    /// point of 4-bit storage), dBias += Σ_rows dY; no dW. With bf16/fp16 matmuls on an ILGPU device W is dequantized to that
    /// precision and the product runs on tensor cores (x and dY rounded, fp32 accumulation); otherwise fp32 throughout.
    /// </summary>
    public static Tensor LinearNf4(Tensor x, Nf4Weight weight, Tensor? bias = null)
    {
        const string op = "linear_nf4";
        RequireF32(op, x, "x");
        if (!ReferenceEquals(x.Device, weight.Device)) throw new ArgumentException($"{op}: tensors live on different devices");
        if (x.Dim(-1) != weight.InFeatures)
            throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} does not fit weight {weight.Name} {ShapeText(weight.Shape)}");
        int outF = weight.OutFeatures, inF = weight.InFeatures;
        int rows = (int)(x.Length / inF);
        if (bias is not null && (bias.Rank != 1 || bias.Dim(0) != outF))
            throw new ArgumentException($"{op}: bias {bias.Name} {ShapeText(bias.Shape)} does not fit [{outF}]");

        var dev = x.Device;
        bool half = !dev.IsCpu && dev.MatmulPrecision != MatmulPrecision.F32;
        var (ht, dtype) = dev.MatmulPrecision == MatmulPrecision.BF16 ? (HalfType.BFloat16, DType.BF16) : (HalfType.Float16, DType.F16);
        var y = EmptyF32(dev, WithLast(x.Shape, outF));
        using (var w = weight.Dequantize(half ? dtype : DType.F32))
        {
            if (half)
            {
                using var xb = CastRaw(x, dtype);
                Gemm.NT(K(x), ht, xb.View<ushort>(), w.View<ushort>(), bias is null ? default : bias.F32View, rows, outF, inF, 1f, false, y.F32View);
            }
            else if (dev.IsCpu)
            {
                MatMul.NTCpu<float>(x.F32, w.F32, rows, outF, inF, 1f, false, y.F32);
                if (bias is not null) Elementwise.AddBiasCpu<float>(y.F32, bias.F32, rows, outF, y.F32);
            }
            else
            {
                MatMul.NT(K(x), x.F32View, w.F32View, rows, outF, inF, 1f, false, y.F32View);
                if (bias is not null) Elementwise.AddBias(K(x), y.F32View, bias.F32View, rows, outF, y.F32View);
            }
        }
        if (!Tape.IsRecording(x, bias)) return y;

        var inShape = x.Shape;
        Tape.Record(op, [x, bias], [y], ctx =>
        {
            var dY = ctx.GradOutput()!;
            if (ctx.NeedsGrad(0))
            {
                var dX = EmptyF32(dev, inShape);
                using var w = weight.Dequantize(half ? dtype : DType.F32);
                if (half)
                {
                    using var dYb = CastRaw(dY, dtype);
                    Gemm.NN(K(dY), ht, dYb.View<ushort>(), w.View<ushort>(), default, rows, inF, outF, 1f, false, dX.F32View);
                }
                else if (dev.IsCpu) MatMul.NNCpu<float>(dY.F32, w.F32, rows, inF, outF, 1f, false, dX.F32);
                else MatMul.NN(K(dY), dY.F32View, w.F32View, rows, inF, outF, 1f, false, dX.F32View);
                ctx.AddGrad(0, dX);
            }
            if (ctx.NeedsGrad(1))
            {
                var dB = Tensor.Zeros(dev, DType.F32, outF);
                if (dev.IsCpu) Elementwise.SumRowsCpu<float>(dY.F32, rows, outF, dB.F32);
                else Elementwise.SumRows(K(dY), dY.F32View, rows, outF, dB.F32View);
                ctx.AddGrad(1, dB);
            }
        });
        return y;
    }
}
