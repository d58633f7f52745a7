// NF4 / FP4 (Nf4.cs) on the driver runtime: quantize, double-quantize and dequantize with the launchers' kernels and shapes
// (the 8-at-a-time 16-bit kernels where rows are whole groups of 8 and aligned, as Nf4.Half8Fits).
using IlgpuTune.Driver;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using ILGPU;

namespace IlgpuTune.Core;

internal sealed partial class DriverBackend
{
    public void Nf4Quantize(Tensor x, int blockSize, QuantType type, Tensor packed, Tensor absmax)
    {
        CheckBlockSize(blockSize);
        long n = x.Length;
        if (n == 0) return;
        int blocks = (int)Nf4Codec.Blocks(n, blockSize);
        RunImplicit("nf4.quantize", blocks, Implicit("nf4.quantize", blocks).Add(V(x)).Add(n).Add(blockSize).Add((int)type).Add(V(packed)).Add(V(absmax)));
    }

    public void Nf4DoubleQuantize(Tensor absmax, Tensor code8, Tensor qabsmax, Tensor absmax2, Tensor offset)
    {
        int m = (int)absmax.Length;
        if (m == 0) return;
        Run("nf4.mean", new KernelConfig(1, Math.Min(_t.RowGroupSize, Nf4.MaxGroup)), Args("nf4.mean").Add(V(absmax)).Add(m).Add(V(offset)));
        int blocks = (int)Nf4Codec.Blocks(m, Nf4Codec.NestedBlockSize);
        RunImplicit("nf4.quantize8", blocks, Implicit("nf4.quantize8", blocks).Add(V(absmax)).Add(V(offset)).Add((long)m).Add(Nf4Codec.NestedBlockSize)
            .Add(V(code8)).Add(V(qabsmax)).Add(V(absmax2)));
    }

    public void Nf4Dequantize(Nf4Weight w, Tensor y)
    {
        long n = w.Length;
        if (n == 0) return;
        bool half = y.DType != DType.F32, f16 = y.DType == DType.F16;
        // Nf4.Half8Fits: whole groups of 8 in a block, the packed bytes 4-byte and the output 16-byte aligned.
        bool half8 = half && n % 8 == 0 && w.BlockSize >= 8 && Aligned(V(w.Packed), 4) && Aligned(V(y), 16);
        long groups = n / 8;
        int log2 = System.Numerics.BitOperations.Log2((uint)w.BlockSize);
        var packed32 = new DeviceView(w.Packed.DevicePointer, groups); // packed.SubView(0, groups * 4).Cast<uint>()
        var y8 = new DeviceView(y.DevicePointer, groups);               // y.SubView(0, n).Cast<Int4>()
        if (w.DoubleQuant && half8)
        {
            Run("nf4.dequantize.half8.nested", Launch.Flat(_t, groups), Args("nf4.dequantize.half8.nested").Add(packed32).Add(V(w.QAbsmax!))
                .Add(V(w.Absmax2!)).Add(V(w.Offset!)).Add(V(w.Code8!)).Add(V(w.Code4)).Add(groups).Add(log2).Add(f16 ? 1 : 0).Add(y8));
            return;
        }
        int blocks = (int)w.Blocks;
        // The absmax of a double-quantized weight is rebuilt per use (as IlgpuBackend and bitsandbytes do).
        using var scratch = w.DoubleQuant ? Tensor.Empty(device, DType.F32, blocks) : null;
        if (scratch is not null)
        {
            RunImplicit("nf4.dequantize.absmax.scale", blocks, Implicit("nf4.dequantize.absmax.scale", blocks).Add(V(w.QAbsmax!)).Add(V(w.Absmax2!))
                .Add(V(w.Code8!)).Add(Nf4Codec.NestedBlockSize).Add(V(scratch)));
            RunImplicit("nf4.dequantize.absmax.offset", blocks, Implicit("nf4.dequantize.absmax.offset", blocks).Add(V(w.Offset!)).Add(V(scratch)));
        }
        var absmax = V(scratch ?? w.Absmax!);
        if (!half)
            Run("nf4.dequantize", Launch.Flat(_t, n), Args("nf4.dequantize").Add(V(w.Packed)).Add(absmax).Add(V(w.Code4)).Add(n).Add(w.BlockSize).Add(V(y)));
        else if (half8)
            Run("nf4.dequantize.half8", Launch.Flat(_t, groups), Args("nf4.dequantize.half8").Add(packed32).Add(absmax).Add(V(w.Code4)).Add(groups)
                .Add(log2).Add(f16 ? 1 : 0).Add(y8));
        else
            Run("nf4.dequantize.half", Launch.Flat(_t, n), Args("nf4.dequantize.half").Add(V(w.Packed)).Add(absmax).Add(V(w.Code4)).Add(n)
                .Add(w.BlockSize).Add(f16 ? 1 : 0).Add(V(y)));
    }

    private static void CheckBlockSize(int blockSize)
    {
        if (blockSize < 2 || (blockSize & (blockSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "blocksize must be a power of two >= 2");
    }
}
