// Ops.LinearNf4's products on ILGPU: on mma.sync tensor cores the GEMM reads the packed double-quantized weight and
// dequantizes it in its load stage (Gemm.RunNf4), so no 16-bit copy of the weight is made; fp32 products, plain-absmax
// weights and Hopper dequantize into a transient workspace first (IOpBackend's default). On the H100 the fused wgmma
// products measured 4x slower than dequantize + GEMM at 4,096 tokens (GpuBench nf4gemm: 0.90 vs 0.22 ms at 4096x4096;
// the scale lookups stall the load stage), so Hopper keeps the workspace until that kernel is faster.
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend
{
    public void MatMulNf4(GemmLayout layout, MatMulShape s, Tensor a, Nf4Weight w, Tensor? bias, Tensor c)
    {
        int n = layout == GemmLayout.NT ? w.OutFeatures : w.InFeatures, k = layout == GemmLayout.NT ? w.InFeatures : w.OutFeatures;
        if (layout is not (GemmLayout.NT or GemmLayout.NN) || s.N != n || s.K != k)
            throw new ArgumentException($"matmul_nf4: {layout} [{s.M}, {s.N}, {s.K}] does not fit weight {w.Name} [{w.OutFeatures}, {w.InFeatures}]");
        if (_k.Wgmma || a.DType == DType.F32 || c.DType != DType.F32 || !w.DoubleQuant)
        {
            using var dense = w.Dequantize(a.DType);
            MatMul(layout, s, a, dense, bias, 1f, false, c);
            return;
        }
        var op = new Nf4Operand(w.Packed.View<byte>(), w.QAbsmax!.View<byte>(), w.Absmax2!.F32View, w.Offset!.F32View, w.Code8!.F32View,
            w.Code4.F32View, w.OutFeatures, w.InFeatures, w.BlockSize);
        Gemm.RunNf4(_k, layout, Precision.HalfOf(a.DType), a.View<ushort>(), op, bias is null ? default : bias.F32View, s.M, 1f, false,
            c.F32View);
    }
}
