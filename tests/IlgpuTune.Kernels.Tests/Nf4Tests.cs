using System.Runtime.InteropServices;
using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// No finite-difference test: quantization is not differentiable and the frozen base weight has no backward.
// tests/fixtures/nf4/nf4.safetensors is made by tools/golden/make_nf4_golden.py (bitsandbytes' CUDA algorithm in torch ops);
// every comparison with it is bit for bit.
[Collection(IlgpuCpuCollection.Name)]
public class Nf4Tests(IlgpuCpuFixture gpu)
{
    static readonly string[] Cases = ["rand", "odd", "bf16", "edge"];
    static uint Bits(float x) => BitConverter.SingleToUInt32Bits(x);

    static SafetensorsFile Golden() => SafetensorsFile.Open(Repo.Fixture("nf4/nf4.safetensors"));

    static float[] F32(SafetensorsFile f, string name) => MemoryMarshal.Cast<byte, float>(f.GetBytes(name)).ToArray();
    static byte[] U8(SafetensorsFile f, string name) => f.GetBytes(name).ToArray();
    static ushort[] Bf16(SafetensorsFile f, string name) => MemoryMarshal.Cast<byte, ushort>(f.GetBytes(name)).ToArray();

    static void BitEqual(string what, float[] want, float[] got)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
            if (Bits(want[i]) != Bits(got[i])) Assert.Fail($"{what}[{i}]: want {want[i]:R} (0x{Bits(want[i]):X8}), got {got[i]:R} (0x{Bits(got[i]):X8})");
    }

    static void Equal<T>(string what, T[] want, T[] got) where T : IEquatable<T>
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
            if (!want[i].Equals(got[i])) Assert.Fail($"{what}[{i}]: want {want[i]}, got {got[i]}");
    }

    [Fact]
    public void Tables_MatchGolden()
    {
        using var f = Golden();
        BitEqual("code.nf4", F32(f, "code.nf4"), Nf4Codec.NormalFloatCode());
        BitEqual("code.fp4", F32(f, "code.fp4"), Nf4Codec.Fp4Code());
        var dyn = Nf4Codec.DynamicMap();
        BitEqual("code.dynamic", F32(f, "code.dynamic"), dyn);
        Assert.Equal(256, dyn.Length);
        Assert.True(dyn[0] > -1f && dyn[127] == 0f && dyn[255] == 1f);
        // our decision-tree literals are the golden's thresholds: t goes to the lower code, the next float up to the upper
        var t4 = F32(f, "thresholds.nf4");
        for (int k = 0; k < t4.Length; k++)
        {
            Assert.Equal(k, Nf4Codec.QuantizeNf4(t4[k]));
            Assert.Equal(k + 1, Nf4Codec.QuantizeNf4(MathF.BitIncrement(t4[k])));
        }
        int[] pattern = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];
        var tf = F32(f, "thresholds.fp4");
        for (int k = 0; k < tf.Length; k++)
        {
            Assert.Equal(pattern[k], Nf4Codec.QuantizeFp4(tf[k]));
            Assert.Equal(pattern[k + 1], Nf4Codec.QuantizeFp4(MathF.BitIncrement(tf[k])));
            Assert.Equal(pattern[k + 1] + 8, Nf4Codec.QuantizeFp4(-MathF.BitIncrement(tf[k])));
        }
    }

    [Theory]
    [InlineData("rand", QuantType.Nf4)] [InlineData("rand", QuantType.Fp4)]
    [InlineData("odd", QuantType.Nf4)] [InlineData("odd", QuantType.Fp4)]
    [InlineData("bf16", QuantType.Nf4)] [InlineData("bf16", QuantType.Fp4)]
    [InlineData("edge", QuantType.Nf4)] [InlineData("edge", QuantType.Fp4)]
    public void CpuReference_ByteExactWithGolden(string name, QuantType type)
    {
        using var f = Golden();
        string p = $"{name}.{type.ToString().ToLowerInvariant()}";
        var x = F32(f, $"{name}.input");
        int n = x.Length, m = (int)Nf4Codec.Blocks(n, Nf4Codec.BlockSize), m2 = (int)Nf4Codec.Blocks(m, Nf4Codec.NestedBlockSize);
        var code4 = Nf4Codec.Code(type);
        var dyn = Nf4Codec.DynamicMap();

        var packed = new byte[(n + 1) / 2];
        var absmax = new float[m];
        Nf4Codec.QuantizeCpu(x, Nf4Codec.BlockSize, type, packed, absmax);
        Equal("packed", U8(f, $"{p}.packed"), packed);
        BitEqual("absmax", F32(f, $"{p}.absmax"), absmax);

        var qabs = new byte[m];
        var absmax2 = new float[m2];
        float offset = Nf4Codec.DoubleQuantizeCpu(absmax, dyn, qabs, absmax2);
        float wantOffset = F32(f, $"{p}.offset")[0];
        Assert.True(Math.Abs(offset - wantOffset) <= 2e-7 * Math.Abs(wantOffset), $"offset {offset:R} vs torch {wantOffset:R}");
        // torch's float32 mean may differ in the last bit; with its offset, the rest is exact
        Nf4Codec.QuantizeBlockwise8Cpu(absmax, wantOffset, dyn, Nf4Codec.NestedBlockSize, qabs, absmax2);
        Equal("qabsmax", U8(f, $"{p}.qabsmax"), qabs);
        BitEqual("absmax2", F32(f, $"{p}.absmax2"), absmax2);

        var absmaxDq = new float[m];
        Nf4Codec.DequantizeAbsmaxCpu(qabs, absmax2, wantOffset, dyn, absmaxDq);
        BitEqual("absmax_dq", F32(f, $"{p}.absmax_dq"), absmaxDq);

        var y = new float[n];
        Nf4Codec.DequantizeCpu(packed, absmax, code4, Nf4Codec.BlockSize, y);
        BitEqual("dequant", F32(f, $"{p}.dequant"), y);
        Nf4Codec.DequantizeCpu(packed, absmaxDq, code4, Nf4Codec.BlockSize, y);
        BitEqual("dequant_nested", F32(f, $"{p}.dequant_nested"), y);
        var yb = new ushort[n];
        Nf4.DequantizeBf16Cpu(packed, absmaxDq, code4, Nf4Codec.BlockSize, yb);
        Equal("dequant_nested_bf16", Bf16(f, $"{p}.dequant_nested_bf16"), yb);
    }

    [Fact]
    public void Blockwise8_ByteExactWithGolden()
    {
        using var f = Golden();
        var x = F32(f, "bw8.input");
        var q = new byte[x.Length];
        var absmax = new float[Nf4Codec.Blocks(x.Length, 256)];
        Nf4Codec.QuantizeBlockwise8Cpu(x, 0f, Nf4Codec.DynamicMap(), 256, q, absmax);
        Equal("bw8.q", U8(f, "bw8.q"), q);
        BitEqual("bw8.absmax", F32(f, "bw8.absmax"), absmax);

        using var gx = gpu.Upload(x); using var goff = gpu.Zeros(1); using var gcode = gpu.Upload(Nf4Codec.DynamicMap());
        using var gq = gpu.Accelerator.Allocate1D<byte>(x.Length); using var ga = gpu.Zeros(absmax.Length);
        Nf4.QuantizeBlockwise8(gpu.Kernels, gx.View, goff.View, gcode.View, x.Length, 256, gq.View, ga.View);
        gpu.Accelerator.Synchronize();
        Equal("bw8.q kernel", q, gq.GetAsArray1D());
        BitEqual("bw8.absmax kernel", absmax, ga.GetAsArray1D());
    }

    // Every launcher on the ILGPU CPU accelerator against the golden file (and so against the CPU references).
    [Theory]
    [InlineData(QuantType.Nf4)]
    [InlineData(QuantType.Fp4)]
    public void Kernels_ByteExactWithGolden(QuantType type)
    {
        using var f = Golden();
        foreach (var name in Cases)
        {
            string p = $"{name}.{type.ToString().ToLowerInvariant()}";
            var x = F32(f, $"{name}.input");
            int n = x.Length, m = (int)Nf4Codec.Blocks(n, Nf4Codec.BlockSize), m2 = (int)Nf4Codec.Blocks(m, Nf4Codec.NestedBlockSize);
            using var gx = gpu.Upload(x); using var gcode4 = gpu.Upload(Nf4Codec.Code(type)); using var gdyn = gpu.Upload(Nf4Codec.DynamicMap());
            using var gpacked = gpu.Accelerator.Allocate1D<byte>((n + 1) / 2); using var gabs = gpu.Zeros(m);
            using var gq8 = gpu.Accelerator.Allocate1D<byte>(m); using var gabs2 = gpu.Zeros(m2); using var goff = gpu.Zeros(1);
            using var gabsDq = gpu.Zeros(m); using var gy = gpu.Zeros(n); using var gyb = gpu.Accelerator.Allocate1D<ushort>(n);

            Nf4.Quantize(gpu.Kernels, gx.View, n, Nf4Codec.BlockSize, type, gpacked.View, gabs.View);
            Nf4.DoubleQuantize(gpu.Kernels, gabs.View, gdyn.View, m, gq8.View, gabs2.View, goff.View);
            gpu.Accelerator.Synchronize();
            Equal($"{p}.packed", U8(f, $"{p}.packed"), gpacked.GetAsArray1D());
            BitEqual($"{p}.absmax", F32(f, $"{p}.absmax"), gabs.GetAsArray1D());
            float want = F32(f, $"{p}.offset")[0], got = goff.GetAsArray1D()[0];
            Assert.True(Math.Abs(got - want) <= 2e-7 * Math.Abs(want), $"{p}.offset {got:R} vs torch {want:R}");

            goff.CopyFromCPU([want]);
            Nf4.QuantizeBlockwise8(gpu.Kernels, gabs.View, goff.View, gdyn.View, m, Nf4Codec.NestedBlockSize, gq8.View, gabs2.View);
            Nf4.DequantizeAbsmax(gpu.Kernels, gq8.View, gabs2.View, goff.View, gdyn.View, m, gabsDq.View);
            Nf4.Dequantize(gpu.Kernels, gpacked.View, gabs.View, gcode4.View, n, Nf4Codec.BlockSize, gy.View);
            gpu.Accelerator.Synchronize();
            Equal($"{p}.qabsmax", U8(f, $"{p}.qabsmax"), gq8.GetAsArray1D());
            BitEqual($"{p}.absmax2", F32(f, $"{p}.absmax2"), gabs2.GetAsArray1D());
            BitEqual($"{p}.absmax_dq", F32(f, $"{p}.absmax_dq"), gabsDq.GetAsArray1D());
            BitEqual($"{p}.dequant", F32(f, $"{p}.dequant"), gy.GetAsArray1D());

            Nf4.Dequantize(gpu.Kernels, gpacked.View, gabsDq.View, gcode4.View, n, Nf4Codec.BlockSize, gy.View);
            Nf4.DequantizeBf16(gpu.Kernels, gpacked.View, gabsDq.View, gcode4.View, n, Nf4Codec.BlockSize, gyb.View);
            gpu.Accelerator.Synchronize();
            BitEqual($"{p}.dequant_nested", F32(f, $"{p}.dequant_nested"), gy.GetAsArray1D());
            Equal($"{p}.dequant_nested_bf16", Bf16(f, $"{p}.dequant_nested_bf16"), gyb.GetAsArray1D());
            // One pass with the absmax rebuilt per block: the same bytes (where n allows the eight-per-thread path).
            gyb.MemSetToZero();
            if (Nf4.DequantizeHalfNested(gpu.Kernels, gpacked.View, gq8.View, gabs2.View, goff.View, gdyn.View, gcode4.View, n, Nf4Codec.BlockSize, false, gyb.View))
            {
                gpu.Accelerator.Synchronize();
                Equal($"{p}.dequant_nested_bf16 one pass", Bf16(f, $"{p}.dequant_nested_bf16"), gyb.GetAsArray1D());
            }
            else Assert.True(n % 8 != 0, $"{p}: the one-pass path should take n = {n}");

            // fp16 (the F16 compute path of QLoRA): the golden's fp32 dequant rounded by the CPU reference cast.
            var wantF16 = new ushort[n];
            Cast.ToF16Cpu(F32(f, $"{p}.dequant_nested"), wantF16);
            var cpuF16 = new ushort[n];
            Nf4.DequantizeF16Cpu(U8(f, $"{p}.packed"), F32(f, $"{p}.absmax_dq"), Nf4Codec.Code(type), Nf4Codec.BlockSize, cpuF16);
            Equal($"{p}.dequant_nested_f16 cpu", wantF16, cpuF16);
            Nf4.DequantizeF16(gpu.Kernels, gpacked.View, gabsDq.View, gcode4.View, n, Nf4Codec.BlockSize, gyb.View);
            gpu.Accelerator.Synchronize();
            Equal($"{p}.dequant_nested_f16", wantF16, gyb.GetAsArray1D());
        }
    }

    // Random lengths (odd, partial blocks, several nested blocks' worth is the golden's job) and block sizes:
    // kernels equal the CPU references byte for byte, and the round trip is within half the largest code gap.
    [Property(MaxTest = 20)]
    public Property Kernels_MatchCpu_AndRoundTripBounded()
    {
        var gen = from n in Gen.Choose(1, 300) from bs in Gen.Elements(2, 32, 64, 128) from t in Gen.Elements(QuantType.Nf4, QuantType.Fp4)
                  from seed in Gen.Choose(0, 10000) select (n, bs, t, seed);
        return Prop.ForAll(gen.ToArbitrary(), s =>
        {
            var (n, bs, type, seed) = s;
            var x = Rand.Floats(seed, n, 3f);
            if (seed % 3 == 0) Array.Clear(x, 0, Math.Min(n, bs)); // a zero block
            int m = (int)Nf4Codec.Blocks(n, bs);
            var code4 = Nf4Codec.Code(type);
            var packed = new byte[(n + 1) / 2];
            var absmax = new float[m];
            Nf4Codec.QuantizeCpu(x, bs, type, packed, absmax);
            var y = new float[n];
            Nf4Codec.DequantizeCpu(packed, absmax, code4, bs, y);
            var sorted = code4.Order().ToArray();
            float halfGap = Enumerable.Range(1, 15).Max(i => sorted[i] - sorted[i - 1]) / 2;
            for (int i = 0; i < n; i++)
                Assert.True(Math.Abs(y[i] - x[i]) <= halfGap * absmax[i / bs] * (1 + 1e-6f), $"i={i}: {x[i]} -> {y[i]}");

            using var gx = gpu.Upload(x); using var gcode4 = gpu.Upload(code4);
            using var gpacked = gpu.Accelerator.Allocate1D<byte>(packed.Length); using var gabs = gpu.Zeros(m); using var gy = gpu.Zeros(n);
            Nf4.Quantize(gpu.Kernels, gx.View, n, bs, type, gpacked.View, gabs.View);
            Nf4.Dequantize(gpu.Kernels, gpacked.View, gabs.View, gcode4.View, n, bs, gy.View);
            gpu.Accelerator.Synchronize();
            Equal("packed", packed, gpacked.GetAsArray1D());
            BitEqual("absmax", absmax, gabs.GetAsArray1D());
            BitEqual("y", y, gy.GetAsArray1D());
        });
    }

    [Fact]
    public void Nf4_TiesGoToTheLowerCode()
    {
        var c = Nf4Codec.NormalFloatCode();
        int ties = 0;
        for (int i = 0; i < 15; i++)
        {
            double mid = ((double)c[i] + c[i + 1]) / 2; // exact
            float m = (float)mid;
            if (m == mid)
            {
                ties++;
                Assert.Equal(i, Nf4Codec.QuantizeNf4(m));
                Assert.Equal(i + 1, Nf4Codec.QuantizeNf4(MathF.BitIncrement(m)));
            }
            else
            {
                // the midpoint falls between two floats, and the rounding of bnb's literal decides those two
                float lo = m < mid ? m : MathF.BitDecrement(m), hi = MathF.BitIncrement(lo);
                Assert.Equal(i, Nf4Codec.QuantizeNf4(MathF.BitDecrement(lo)));
                Assert.Equal(i + 1, Nf4Codec.QuantizeNf4(MathF.BitIncrement(hi)));
            }
        }
        Assert.Equal(6, ties); // the other 9 midpoints need a 25th bit
        Assert.Equal(0, Nf4Codec.QuantizeNf4(float.NaN));
        Assert.Equal(7, Nf4Codec.QuantizeNf4(0f));
        Assert.Equal(7, Nf4Codec.QuantizeNf4(-0f));
        Assert.Equal(0, Nf4Codec.QuantizeFp4(-0f));
    }

    [Fact]
    public void ZeroBlock_PacksCodeZero_AndDequantizesToZero()
    {
        var x = new float[64];
        var packed = new byte[32];
        var absmax = new float[1];
        Nf4Codec.QuantizeCpu(x, 64, QuantType.Nf4, packed, absmax);
        Assert.All(packed, b => Assert.Equal(0, b)); // 0 * (1/0) = NaN -> code 0, as CUDA
        Assert.Equal(0f, absmax[0]);
        var y = new float[64];
        Nf4Codec.DequantizeCpu(packed, absmax, Nf4Codec.NormalFloatCode(), 64, y);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void OddLength_PartialBlock_PadsWithTheCodeOfZero()
    {
        var x = Rand.Floats(5, 65, 2f);
        x[64] = -1.5f; // the last block is this one element: it becomes code 0 (-1), the pad nibble the code of 0 (7)
        var packed = new byte[33];
        var absmax = new float[2];
        Nf4Codec.QuantizeCpu(x, 64, QuantType.Nf4, packed, absmax);
        Assert.Equal(1.5f, absmax[1]);
        Assert.Equal(0x07, packed[32]);
        Nf4Codec.QuantizeCpu(x, 64, QuantType.Fp4, packed, absmax);
        Assert.Equal(0xB0, packed[32]); // FP4 -1 = sign | 0b011; pad 0b0000
    }
}
