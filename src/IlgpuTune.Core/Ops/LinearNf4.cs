using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// bitsandbytes' Linear4bit / MatMul4Bit: x[..., in] · dequant(W)[out, in]ᵀ + bias[out] -> y[..., out], W frozen.
    /// Backward: dX = dY · dequant(W) (no dense weight is kept: that is the point of 4-bit storage), dBias += Σ_rows dY; no dW.
    /// With bf16/fp16 matmuls on an ILGPU device the products run on tensor cores with W dequantized to that precision inside
    /// the GEMM's load stage (x and dY rounded, fp32 accumulation; IOpBackend.MatMulNf4); otherwise W is dequantized into a
    /// transient workspace per product, fp32 throughout on the CPU.
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
        var backend = dev.Backend;
        // F32, or the 16-bit type of the tensor-core products
        var dtype = dev.Matmuls.Matmul;
        bool half = dtype != DType.F32;
        var y = EmptyF32(dev, WithLast(x.Shape, outF));
        using (var xb = half ? SharedCast(x, dtype, keep: false) : x.Alias())
            backend.MatMulNf4(GemmLayout.NT, new(rows, outF, inF), xb, weight, bias, y);
        if (!Tape.IsRecording(x, bias)) return y;

        var inShape = x.Shape;
        Tape.Record(op, [x, bias], [y], ctx =>
        {
            var dY = ctx.GradOutput()!;
            if (ctx.NeedsGrad(0))
            {
                var dX = EmptyF32(dev, inShape);
                using var dYb = half ? CastRaw(dY, dtype) : dY.Alias();
                backend.MatMulNf4(GemmLayout.NN, new(rows, inF, outF), dYb, weight, null, dX);
                ctx.AddGrad(0, dX);
            }
            if (ctx.NeedsGrad(1))
            {
                var dB = Tensor.Zeros(dev, DType.F32, outF);
                backend.SumRows(dY, dB);
                ctx.AddGrad(1, dB);
            }
        });
        return y;
    }
}
