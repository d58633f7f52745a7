// A frozen 4-bit (bitsandbytes NF4/FP4) linear weight on a device, as bnb's Params4bit + QuantState (formats.md §5.3-5.6):
//   packed   U8  [(n+1)/2]               two 4-bit codes per byte, the even element in the high nibble (n = out*in, row-major)
//   absmax   either F32 [blocks]          (plain), or double-quantized (bnb_4bit_use_double_quant, the QLoRA default):
//            qabsmax U8 [blocks] + absmax2 F32 [ceil(blocks/256)] + offset F32 [1] with the 8-bit map code8 F32 [256]
//   code4    F32 [16]                    the 4-bit code (quant_map)
// blocks = ceil(n / blocksize). The weight is never trained; Ops.LinearNf4 multiplies by it through IOpBackend.MatMulNf4 (on
// tensor cores the GEMM dequantizes it in its load stage; elsewhere into a transient workspace per product).
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public sealed class Nf4Weight : IDisposable
{
    private Nf4Weight(Device device, int[] shape, int blockSize, QuantType quantType, Tensor packed, Tensor code4,
        Tensor? absmax, Tensor? qabsmax, Tensor? absmax2, Tensor? offset, Tensor? code8)
    {
        Device = device;
        Shape = shape;
        BlockSize = blockSize;
        QuantType = quantType;
        Packed = packed;
        Code4 = code4;
        Absmax = absmax;
        QAbsmax = qabsmax;
        Absmax2 = absmax2;
        Offset = offset;
        Code8 = code8;
    }

    public Device Device { get; }
    /// <summary>[out, in] of the original weight.</summary>
    public int[] Shape { get; }
    public int OutFeatures => Shape[0];
    public int InFeatures => Shape[1];
    public long Length => (long)Shape[0] * Shape[1];
    public int BlockSize { get; }
    public QuantType QuantType { get; }
    public long Blocks => Nf4Codec.Blocks(Length, BlockSize);

    /// <summary>The HF key of the original weight (e.g. "model.layers.0.mlp.up_proj.weight").</summary>
    public string? Name { get; set; }

    public Tensor Packed { get; }
    public Tensor Code4 { get; }
    /// <summary>Plain per-block absmax (F32 [blocks]); null when double-quantized.</summary>
    public Tensor? Absmax { get; }
    /// <summary>Double quantization: qabsmax U8 [blocks], absmax2 F32 [ceil(blocks/256)], offset F32 [1], code8 F32 [256].</summary>
    public Tensor? QAbsmax { get; }
    public Tensor? Absmax2 { get; }
    public Tensor? Offset { get; }
    public Tensor? Code8 { get; }
    public bool DoubleQuant => QAbsmax is not null;

    /// <summary>Device bytes held (the quantized weight and its statistics and codes).</summary>
    public long Bytes => new[] { Packed, Code4, Absmax, QAbsmax, Absmax2, Offset, Code8 }.OfType<Tensor>().Sum(t => t.Bytes);

    /// <summary>
    /// Quantizes w[out, in] (F32 or BF16, any device) with bitsandbytes' kernels: the ILGPU kernels on an accelerator, the
    /// CPU references on the managed CPU device (byte-identical). <paramref name="doubleQuant"/>: quantize the absmax too.
    /// </summary>
    public static Nf4Weight Quantize(Tensor w, QuantType quantType = QuantType.Nf4, int blockSize = Nf4Codec.BlockSize, bool doubleQuant = true)
    {
        if (w.Rank != 2) throw new ArgumentException($"nf4: weight {w.Name} must be 2-D, is [{string.Join(", ", w.Shape)}]");
        if (w.DType is not (DType.F32 or DType.BF16)) throw new ArgumentException($"nf4: weight {w.Name} is {w.DType}; F32 or BF16 expected");
        var device = w.Device;
        long n = w.Length, blocks = Nf4Codec.Blocks(n, blockSize), blocks2 = Nf4Codec.Blocks(blocks, Nf4Codec.NestedBlockSize);
        var shape = (int[])w.Shape.Clone();
        var code4 = Tensor.FromArray(device, Nf4Codec.Code(quantType), 16);
        var packed = Tensor.Empty(device, DType.U8, checked((int)((n + 1) / 2)));
        var absmax = Tensor.Empty(device, DType.F32, checked((int)blocks));
        Tensor? qabsmax = null, absmax2 = null, offset = null, code8 = null;
        if (doubleQuant)
        {
            qabsmax = Tensor.Empty(device, DType.U8, (int)blocks);
            absmax2 = Tensor.Empty(device, DType.F32, (int)blocks2);
            offset = Tensor.Empty(device, DType.F32, 1);
            code8 = Tensor.FromArray(device, Nf4Codec.DynamicMap(), 256);
        }
        using (var x = w.DType == DType.F32 ? w.Alias() : Ops.CastRaw(w, DType.F32))
            device.Backend.Nf4Quantize(x, blockSize, quantType, packed, absmax);
        if (doubleQuant) device.Backend.Nf4DoubleQuantize(absmax, code8!, qabsmax!, absmax2!, offset!);
        if (doubleQuant)
        {
            absmax.Dispose();
            absmax = null;
        }
        return new Nf4Weight(device, shape, blockSize, quantType, packed, code4, absmax, qabsmax, absmax2, offset, code8)
            { Name = w.Name };
    }

    /// <summary>
    /// A weight already quantized (e.g. a bitsandbytes checkpoint, formats.md §5.6): <paramref name="packed"/> [(n+1)/2],
    /// <paramref name="quantMap"/> [16], and either fp32 <paramref name="absmax"/> [blocks] or the double-quantized
    /// <paramref name="qabsmax"/> [blocks] + <paramref name="nestedAbsmax"/> [ceil(blocks/256)] + <paramref name="nestedQuantMap"/>
    /// [256] + <paramref name="nestedOffset"/>. Copied to <paramref name="device"/>.
    /// </summary>
    public static Nf4Weight FromQuantized(Device device, int[] shape, int blockSize, QuantType quantType, ReadOnlySpan<byte> packed,
        ReadOnlySpan<float> quantMap, float[]? absmax = null, byte[]? qabsmax = null, float[]? nestedAbsmax = null,
        float[]? nestedQuantMap = null, float nestedOffset = 0f, string? name = null) =>
        FromQuantized(device, shape, blockSize, quantType, packed, null, quantMap, absmax, qabsmax, nestedAbsmax, nestedQuantMap,
            nestedOffset, name);

    /// <summary>As above, taking the packed array itself where the device keeps host memory (no second copy of a model's
    /// worth of bytes on the managed CPU path); the caller must not change it afterwards.</summary>
    public static Nf4Weight FromQuantized(Device device, int[] shape, int blockSize, QuantType quantType, byte[] packed,
        ReadOnlySpan<float> quantMap, float[]? absmax = null, byte[]? qabsmax = null, float[]? nestedAbsmax = null,
        float[]? nestedQuantMap = null, float nestedOffset = 0f, string? name = null) =>
        FromQuantized(device, shape, blockSize, quantType, packed, packed, quantMap, absmax, qabsmax, nestedAbsmax, nestedQuantMap,
            nestedOffset, name);

    private static Nf4Weight FromQuantized(Device device, int[] shape, int blockSize, QuantType quantType, ReadOnlySpan<byte> packed,
        byte[]? adopted, ReadOnlySpan<float> quantMap, float[]? absmax, byte[]? qabsmax, float[]? nestedAbsmax,
        float[]? nestedQuantMap, float nestedOffset, string? name)
    {
        if (shape.Length != 2) throw new ArgumentException($"nf4 {name}: shape must be [out, in], is [{string.Join(", ", shape)}]");
        if (blockSize < 2 || (blockSize & (blockSize - 1)) != 0) throw new ArgumentException($"nf4 {name}: blocksize {blockSize} is not a power of two");
        long n = Tensor.ShapeLength(shape), blocks = Nf4Codec.Blocks(n, blockSize);
        void Need(string what, long got, long want)
        {
            if (got != want) throw new ArgumentException($"nf4 {name}: {what} has {got} elements, expected {want} for shape [{string.Join(", ", shape)}], blocksize {blockSize}");
        }
        Need("packed", packed.Length, (n + 1) / 2);
        Need("quant_map", quantMap.Length, 16);
        bool nested = qabsmax is not null;
        if (nested == (absmax is not null)) throw new ArgumentException($"nf4 {name}: give either absmax or qabsmax (double quant)");
        if (nested)
        {
            Need("absmax (nested)", qabsmax!.Length, blocks);
            Need("nested_absmax", nestedAbsmax?.Length ?? 0, Nf4Codec.Blocks(blocks, Nf4Codec.NestedBlockSize));
            Need("nested_quant_map", nestedQuantMap?.Length ?? 0, 256);
        }
        else Need("absmax", absmax!.Length, blocks);
        var t = new List<Tensor>();
        Tensor Keep(Tensor x)
        {
            t.Add(x);
            return x;
        }
        try
        {
            int bytes = (int)((n + 1) / 2);
            var p = Keep(adopted is null ? Tensor.FromBytes(device, DType.U8, packed, bytes) : Tensor.Adopt(device, DType.U8, adopted, bytes));
            var c4 = Keep(Tensor.FromArray(device, quantMap, 16));
            return nested
                ? new Nf4Weight(device, (int[])shape.Clone(), blockSize, quantType, p, c4, null,
                    Keep(Tensor.FromBytes(device, DType.U8, qabsmax, qabsmax!.Length)),
                    Keep(Tensor.FromArray(device, nestedAbsmax, nestedAbsmax!.Length)),
                    Keep(Tensor.FromArray(device, [nestedOffset], 1)),
                    Keep(Tensor.FromArray(device, nestedQuantMap, 256))) { Name = name }
                : new Nf4Weight(device, (int[])shape.Clone(), blockSize, quantType, p, c4, Keep(Tensor.FromArray(device, absmax, absmax!.Length)),
                    null, null, null, null) { Name = name };
        }
        catch
        {
            foreach (var x in t) x.Dispose();
            throw;
        }
    }

    /// <summary>The weight dequantized: F32, BF16 or F16 [out, in] (fp32 math, then rounded once). The caller disposes it.</summary>
    public Tensor Dequantize(DType dtype = DType.F32)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"nf4: dequantize to F32, BF16 or F16, not {dtype}");
        var y = Tensor.Empty(Device, dtype, Shape);
        Device.Backend.Nf4Dequantize(this, y);
        return y;
    }

    public void Dispose()
    {
        foreach (var t in new[] { Packed, Code4, Absmax, QAbsmax, Absmax2, Offset, Code8 }) t?.Dispose();
    }

    public override string ToString() => $"Nf4Weight({Name ?? "?"}, {QuantType}, [{string.Join(", ", Shape)}], {Device.Kind})";
}
