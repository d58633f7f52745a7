// NF4/FP4 kernels on CUDA against the torch golden (tests/fixtures/nf4/nf4.safetensors, made by tools/golden/make_nf4_golden.py):
// the same byte-exact comparison Nf4Tests runs on the CPU accelerator, for the real PTX (FMA fusion, division rounding).
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

static class Nf4Check
{
    public static int Run(string fixture)
    {
        using var ctx = Context.Create(b => b.Cuda().EnableAlgorithms());
        using var acc = ctx.GetCudaDevice(0).CreateAccelerator(ctx);
        using var k = new KernelRegistry(acc);
        using var f = SafetensorsFile.Open(fixture);
        int failures = 0;
        foreach (var name in new[] { "rand", "odd", "bf16", "edge" }) // the 4-bit cases (bw8 tests the 8-bit quantizer alone)
            foreach (var type in new[] { QuantType.Nf4, QuantType.Fp4 })
            {
                string p = $"{name}.{type.ToString().ToLowerInvariant()}";
                var x = f.ReadFloat32($"{name}.input");
                int n = x.Length, m = (int)Nf4Codec.Blocks(n, Nf4Codec.BlockSize), m2 = (int)Nf4Codec.Blocks(m, Nf4Codec.NestedBlockSize);
                using var gx = acc.Allocate1D(x); using var code4 = acc.Allocate1D(Nf4Codec.Code(type)); using var dyn = acc.Allocate1D(Nf4Codec.DynamicMap());
                using var packed = acc.Allocate1D<byte>((n + 1) / 2); using var absmax = acc.Allocate1D<float>(m);
                using var q8 = acc.Allocate1D<byte>(m); using var absmax2 = acc.Allocate1D<float>(m2); using var offset = acc.Allocate1D<float>(1);
                using var absmaxDq = acc.Allocate1D<float>(m); using var y = acc.Allocate1D<float>(n);
                Nf4.Quantize(k, gx.View, n, Nf4Codec.BlockSize, type, packed.View, absmax.View);
                Nf4.DoubleQuantize(k, absmax.View, dyn.View, m, q8.View, absmax2.View, offset.View);
                offset.CopyFromCPU(f.ReadFloat32($"{p}.offset")); // torch's fp32 mean may differ in the last bit; the rest must not
                Nf4.QuantizeBlockwise8(k, absmax.View, offset.View, dyn.View, m, Nf4Codec.NestedBlockSize, q8.View, absmax2.View);
                Nf4.DequantizeAbsmax(k, q8.View, absmax2.View, offset.View, dyn.View, m, absmaxDq.View);
                Nf4.Dequantize(k, packed.View, absmaxDq.View, code4.View, n, Nf4Codec.BlockSize, y.View);
                using var yb = acc.Allocate1D<ushort>(n);
                bool onePass = Nf4.DequantizeHalfNested(k, packed.View, q8.View, absmax2.View, offset.View, dyn.View, code4.View, n,
                    Nf4Codec.BlockSize, false, yb.View);
                acc.Synchronize();
                bool ok = f.GetBytes($"{p}.packed").SequenceEqual(packed.GetAsArray1D())
                    && (!onePass || f.GetBytes($"{p}.dequant_nested_bf16").SequenceEqual(MemoryMarshal.AsBytes(yb.GetAsArray1D().AsSpan()).ToArray()))
                    && Bits(f.ReadFloat32($"{p}.absmax")).SequenceEqual(Bits(absmax.GetAsArray1D()))
                    && f.GetBytes($"{p}.qabsmax").SequenceEqual(q8.GetAsArray1D())
                    && Bits(f.ReadFloat32($"{p}.dequant_nested")).SequenceEqual(Bits(y.GetAsArray1D()));
                if (!ok) failures++;
                Console.WriteLine($"{p,-14} n={n,6}  {(ok ? "byte-exact" : "MISMATCH")}");
            }
        Console.WriteLine($"nf4 on {acc.Name}: {(failures == 0 ? "all byte-exact with the torch golden" : $"{failures} cases differ")}");
        return failures == 0 ? 0 : 1;
    }

    static IEnumerable<int> Bits(float[] a) => a.Select(BitConverter.SingleToInt32Bits);
}
