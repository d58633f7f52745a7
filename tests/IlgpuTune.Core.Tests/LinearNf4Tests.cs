using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>
/// Nf4Weight (quantize / load / dequantize) and Ops.LinearNf4 / the QLoRA LoraLinear: on every device they equal the dense
/// ops on the dequantized weight (forward, dX, dBias, LoRA grads), and nothing dense is kept for backward.
/// </summary>
public class LinearNf4Tests
{
    private const int Rows = 5, InF = 24, OutF = 7; // 168 weights: 3 blocks of 64, the last partial

    public static TheoryData<string, DType> Devices => new()
    {
        { "cpu", DType.F32 },
        { "ilgpu-cpu", DType.F32 },
        { "ilgpu-cpu", DType.BF16 },
        { "ilgpu-cpu", DType.F16 },
    };

    private static Device Create(string kind, DType precision)
    {
        var d = Device.Create(kind);
        d.Precision = Precision.Of(precision);
        return d;
    }

    private static byte[][] Bytes(Nf4Weight w) => [w.Packed.ToBytes(), w.QAbsmax!.ToBytes(), w.Absmax2!.ToBytes(), w.Offset!.ToBytes()];

    [Fact]
    public void Quantize_IsByteIdenticalOnEveryDevice_AndFromQuantizedRoundTrips()
    {
        int outF = 9, inF = 61; // odd n = 549: 9 blocks, a padded last byte
        var data = Rand.Floats(11, outF * inF, 0.3f);
        using var cpu = Device.Create("cpu");
        using var emu = Device.Create("ilgpu-cpu");
        using var wc = Tensor.FromArray(cpu, data, outF, inF).Named("w");
        using var we = Tensor.FromArray(emu, data, outF, inF);
        using var qc = Nf4Weight.Quantize(wc);
        using var qe = Nf4Weight.Quantize(we);
        Assert.Equal("w", qc.Name);
        Assert.Equal(Bytes(qc), Bytes(qe));

        // The CPU references by hand: plain quantize, then double quantization of the absmax.
        var packed = new byte[(data.Length + 1) / 2];
        var absmax = new float[Nf4Codec.Blocks(data.Length, 64)];
        Nf4Codec.QuantizeCpu(data, 64, QuantType.Nf4, packed, absmax);
        var qabs = new byte[absmax.Length];
        var absmax2 = new float[1];
        float offset = Nf4Codec.DoubleQuantizeCpu(absmax, Nf4Codec.DynamicMap(), qabs, absmax2);
        Assert.Equal(packed, qc.Packed.ToBytes());
        Assert.Equal(qabs, qc.QAbsmax!.ToBytes());
        Assert.Equal(offset, qc.Offset!.Item());
        var absmaxDq = new float[absmax.Length];
        Nf4Codec.DequantizeAbsmaxCpu(qabs, absmax2, offset, Nf4Codec.DynamicMap(), absmaxDq);
        var want = new float[data.Length];
        Nf4Codec.DequantizeCpu(packed, absmaxDq, Nf4Codec.NormalFloatCode(), 64, want);
        using (var y = qc.Dequantize()) Assert.Equal(want, y.ToFloatArray());
        using (var y = qe.Dequantize()) Assert.Equal(want, y.ToFloatArray());
        var wantBf16 = new ushort[want.Length];
        Cast.ToBf16Cpu(want, wantBf16);
        using (var y = qe.Dequantize(DType.BF16)) Assert.Equal(wantBf16.Select(HalfBits.Bf16ToFloat), y.ToFloatArray());
        using (var y = qc.Dequantize(DType.BF16)) Assert.Equal(wantBf16.Select(HalfBits.Bf16ToFloat), y.ToFloatArray());

        // BF16 input quantizes as its fp32 widening.
        using var wb = Ops.Cast(we, DType.BF16);
        using var qb = Nf4Weight.Quantize(wb);
        using var wr = Tensor.FromArray(cpu, wb.ToFloatArray(), outF, inF);
        using var qr = Nf4Weight.Quantize(wr);
        Assert.Equal(Bytes(qr), Bytes(qb));

        // A checkpoint's arrays (double-quantized, and plain fp32 absmax) load to the same weight.
        using var fromNested = Nf4Weight.FromQuantized(emu, [outF, inF], 64, QuantType.Nf4, packed, Nf4Codec.NormalFloatCode(),
            qabsmax: qabs, nestedAbsmax: absmax2, nestedQuantMap: Nf4Codec.DynamicMap(), nestedOffset: offset);
        using (var y = fromNested.Dequantize()) Assert.Equal(want, y.ToFloatArray());
        using var fromPlain = Nf4Weight.FromQuantized(cpu, [outF, inF], 64, QuantType.Nf4, packed, Nf4Codec.NormalFloatCode(), absmax: absmax);
        Assert.False(fromPlain.DoubleQuant);
        var wantPlain = new float[data.Length];
        Nf4Codec.DequantizeCpu(packed, absmax, Nf4Codec.NormalFloatCode(), 64, wantPlain);
        using (var y = fromPlain.Dequantize()) Assert.Equal(wantPlain, y.ToFloatArray());
        Assert.Throws<ArgumentException>(() => Nf4Weight.FromQuantized(cpu, [outF, inF + 2], 64, QuantType.Nf4, packed, Nf4Codec.NormalFloatCode(), absmax: absmax));

        // 4.x bits per weight: packed (n+1)/2, qabsmax 1 B per 64, absmax2, offset, codes.
        Assert.Equal(275 + 9 + 4 + 4 + 64 + 1024, qc.Bytes);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void LinearNf4_EqualsLinearOnTheDequantizedWeight(string kind, DType precision)
    {
        using var d = Create(kind, precision);
        using var w = Tensor.FromArray(d, Rand.Floats(2, OutF * InF, 0.5f), OutF, InF);
        using var q = Nf4Weight.Quantize(w);
        var dtype = precision;
        using var dense = q.Dequantize(dtype);
        using var x = Tensor.FromArray(d, Rand.Floats(1, Rows * InF), Rows, InF);
        using var b = Tensor.FromArray(d, Rand.Floats(3, OutF), OutF);
        var g = Rand.Floats(4, Rows * OutF);
        x.RequiresGrad = b.RequiresGrad = true;

        (float[] Y, float[] DX, float[] DB) Run(Func<Tensor> f)
        {
            using var tape = new Tape();
            using var y = f();
            var yv = y.ToFloatArray();
            tape.Backward(y, Tensor.FromArray(d, g, Rows, OutF));
            var r = (yv, x.Grad!.ToFloatArray(), b.Grad!.ToFloatArray());
            x.Grad.Dispose(); b.Grad.Dispose();
            x.Grad = b.Grad = null;
            return r;
        }
        var want = Run(() => Ops.Linear(x, dense, b));
        long before = d.Allocator.AllocatedBytes;
        var got = Run(() =>
        {
            var y = Ops.LinearNf4(x, q, b);
            // Nothing but the output outlives the forward: the dense weight is a transient workspace, not saved for backward.
            Assert.Equal(before + CachingAllocator.RoundSize(y.Bytes), d.Allocator.AllocatedBytes);
            return y;
        });
        Close.Assert("y", want.Y, got.Y, 0, 0);
        Close.Assert("dX", want.DX, got.DX, 0, 0);
        Close.Assert("dBias", want.DB, got.DB, 0, 0);
    }

    // On tensor cores the GEMM dequantizes the weight in its load stage: neither the forward nor dX allocates a 16-bit copy
    // of it (16 KB here; everything else the step allocates is under 8 KB).
    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void LinearNf4_OnTensorCores_AllocatesNoDequantizedWeight(DType precision)
    {
        const int rows = 2, outF = 64, inF = 128;
        using var d = Create("ilgpu-cpu", precision);
        using var w = Tensor.FromArray(d, Rand.Floats(5, outF * inF, 0.5f), outF, inF);
        using var q = Nf4Weight.Quantize(w);
        using var dense = q.Dequantize(precision);
        using var x = Tensor.FromArray(d, Rand.Floats(6, rows * inF), rows, inF);
        var g = Rand.Floats(7, rows * outF);
        x.RequiresGrad = true;
        float[] wantY, wantDX;
        using (var tape = new Tape())
        using (var y = Ops.Linear(x, dense))
        {
            wantY = y.ToFloatArray();
            tape.Backward(y, Tensor.FromArray(d, g, rows, outF));
            wantDX = x.Grad!.ToFloatArray();
            x.Grad.Dispose();
            x.Grad = null;
        }
        d.Allocator.ResetPeak();
        long before = d.Allocator.AllocatedBytes;
        using (var tape = new Tape())
        using (var y = Ops.LinearNf4(x, q))
        {
            tape.Backward(y, Tensor.FromArray(d, g, rows, outF));
            Assert.Equal(wantY, y.ToFloatArray());
            Assert.Equal(wantDX, x.Grad!.ToFloatArray());
        }
        long peak = d.Allocator.PeakAllocatedBytes - before;
        Assert.True(peak < 8192, $"LinearNf4 forward+backward peaked at {peak} bytes over its inputs (a dense weight is {dense.Bytes})");
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void QLoraLinear_EqualsLoraLinearOnTheDequantizedWeight(string kind, DType precision)
    {
        const int r = 3;
        using var d = Create(kind, precision);
        using var w = Tensor.FromArray(d, Rand.Floats(2, OutF * InF, 0.5f), OutF, InF);
        using var q = Nf4Weight.Quantize(w);
        var dtype = precision;
        using var dense = q.Dequantize(dtype);
        using var x = Tensor.FromArray(d, Rand.Floats(1, Rows * InF), Rows, InF);
        using var a = Tensor.FromArray(d, Rand.Floats(5, r * InF, 0.2f), r, InF);
        using var bl = Tensor.FromArray(d, Rand.Floats(6, OutF * r, 0.2f), OutF, r);
        var g = Rand.Floats(4, Rows * OutF);
        x.RequiresGrad = a.RequiresGrad = bl.RequiresGrad = true;

        float[][] Run(Func<Tensor> f)
        {
            using var tape = new Tape();
            using var y = f();
            var yv = y.ToFloatArray();
            tape.Backward(y, Tensor.FromArray(d, g, Rows, OutF));
            float[][] res = [yv, x.Grad!.ToFloatArray(), a.Grad!.ToFloatArray(), bl.Grad!.ToFloatArray()];
            foreach (var t in new[] { x, a, bl })
            {
                t.Grad!.Dispose();
                t.Grad = null;
            }
            return res;
        }
        var want = Run(() => Ops.LoraLinear(x, dense, null, a, bl, 2f, 0.25f, new Random(7)));
        var got = Run(() => Ops.LoraLinear(x, q, null, a, bl, 2f, 0.25f, new Random(7)));
        string[] names = ["y", "dX", "dA", "dB"];
        for (int i = 0; i < names.Length; i++) Close.Assert(names[i], want[i], got[i], 0, 0);
    }
}
