// NF4 dequantize to bf16 on CUDA (Nf4.DequantizeHalfNested: double-quantized, blocksize 64, the Llama-2-7B weight shapes),
// against the kernel it replaced (8 elements a thread: one 4-byte load, one 16-byte store, the code table read through
// L1; copied below as it was at commit 8104302, for this comparison only), in one run:
//   dotnet IlgpuTune.GpuBench.dll nf4dequant [--out DIR]
// Checks first: both outputs byte-equal to each other and to the CPU reference (Nf4Codec's absmax, Nf4.DequantizeBf16Cpu)
// on every shape, bf16 and fp16. Then times (GemmBench.Time: median of 7 event pairs of 10 launches) and GB/s of the bytes
// that must move (packed n/2 + qabsmax n/64 in, 2n out), with a device-to-device copy of as many bytes for scale.
using System.Globalization;
using System.Text;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

static class Nf4DequantBench
{
    public static int Run(string outDir)
    {
        using var ctx = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling());
        using var acc = ctx.GetCudaDevice(0).CreateAccelerator(ctx);
        using var k = new KernelRegistry(acc);
        var inv = CultureInfo.InvariantCulture;
        var report = new StringBuilder();
        void Line(string s)
        {
            Console.WriteLine(s);
            report.AppendLine(s);
        }
        var baseline = acc.LoadStreamKernel<ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            long, int, int, ArrayView<ILGPU.Util.Int4>>(BaselineKernel);
        Line($"nf4dequant on {acc.Name}, {acc.NumMultiprocessors} SMs: NF4 blocksize 64 double-quantized -> bf16; ms per weight");
        Line("| W [out, in] | old (8/thread) | new (32/thread) | old / new | old GB/s | new GB/s | copy GB/s | bytes equal (old, new, CPU; bf16 and fp16) |");
        Line("|---|---:|---:|---:|---:|---:|---:|---|");
        bool ok = true;
        var rng = new Random(24);
        foreach (var (outF, inF) in new[] { (4096, 4096), (11008, 4096) })
        {
            long n = (long)outF * inF, blocks = Nf4Codec.Blocks(n, Nf4Codec.BlockSize);
            var w = new float[n];
            for (long i = 0; i < n; i++) w[i] = (float)(rng.NextDouble() * 2 - 1) * 0.05f;
            using var dW = acc.Allocate1D(w);
            using var packed = acc.Allocate1D<byte>((n + 1) / 2);
            using var absmax = acc.Allocate1D<float>(blocks);
            using var qabsmax = acc.Allocate1D<byte>(blocks);
            using var absmax2 = acc.Allocate1D<float>(Nf4Codec.Blocks(blocks, Nf4Codec.NestedBlockSize));
            using var offset = acc.Allocate1D<float>(1);
            using var code8 = acc.Allocate1D(Nf4Codec.DynamicMap());
            using var code4 = acc.Allocate1D(Nf4Codec.Code(QuantType.Nf4));
            Nf4.Quantize(k, dW.View, n, Nf4Codec.BlockSize, QuantType.Nf4, packed.View, absmax.View);
            Nf4.DoubleQuantize(k, absmax.View, code8.View, (int)blocks, qabsmax.View, absmax2.View, offset.View);
            using var yOld = acc.Allocate1D<ushort>(n);
            using var yNew = acc.Allocate1D<ushort>(n);
            using var copyDst = acc.Allocate1D<byte>(n * 2);
            using var copySrc = acc.Allocate1D<byte>(n * 2);
            long groups = n / 8;
            ArrayView<byte> packedBytes = packed.View;
            ArrayView<ushort> yOldBits = yOld.View;
            void Old(bool f16) => baseline(new KernelConfig((int)Math.Min((groups + 255) / 256, 1 << 16), 256), packedBytes.SubView(0, groups * 4).Cast<uint>(),
                qabsmax.View, absmax2.View, offset.View, code8.View, code4.View, groups, 6, f16 ? 1 : 0, yOldBits.Cast<ILGPU.Util.Int4>());
            void New(bool f16)
            {
                if (!Nf4.DequantizeHalfNested(k, packed.View, qabsmax.View, absmax2.View, offset.View, code8.View, code4.View, n, Nf4Codec.BlockSize,
                        f16, yNew.View))
                    throw new InvalidOperationException("the fast path refused an aligned 7B weight");
            }

            // The CPU reference: absmax rebuilt as bnb does, then Nf4.DequantizeBf16Cpu / F16Cpu.
            var hostPacked = packed.GetAsArray1D();
            var hostAbsmax = new float[blocks];
            {
                var q = qabsmax.GetAsArray1D();
                var a2 = absmax2.GetAsArray1D();
                var c8 = Nf4Codec.DynamicMap();
                float off = offset.GetAsArray1D()[0];
                for (long b = 0; b < blocks; b++)
                {
                    float scaled = c8[q[b]] * a2[b / Nf4Codec.NestedBlockSize];
                    hostAbsmax[b] = scaled + off;
                }
            }
            var code = Nf4Codec.Code(QuantType.Nf4);
            bool equal = true;
            foreach (bool f16 in new[] { false, true })
            {
                yOld.MemSetToZero();
                yNew.MemSetToZero();
                Old(f16);
                New(f16);
                acc.Synchronize();
                var want = new ushort[n];
                if (f16) Nf4.DequantizeF16Cpu(hostPacked, hostAbsmax, code, Nf4Codec.BlockSize, want);
                else Nf4.DequantizeBf16Cpu(hostPacked, hostAbsmax, code, Nf4Codec.BlockSize, want);
                var o = yOld.GetAsArray1D();
                var nw = yNew.GetAsArray1D();
                equal &= o.AsSpan().SequenceEqual(want) && nw.AsSpan().SequenceEqual(want);
            }
            ok &= equal;
            double bytes = n / 2 + blocks + 2.0 * n;
            double tOld = GemmBench.Time(acc, () => Old(false)), tNew = GemmBench.Time(acc, () => New(false));
            long half = (long)bytes / 2; // a copy of bytes / 2 reads and writes `bytes`
            double tCopy = GemmBench.Time(acc, () => copySrc.View.SubView(0, half).CopyTo(copyDst.View.SubView(0, half)));
            double gb(double ms, double b) => b / (ms / 1e3) / 1e9;
            Line(string.Create(inv, $"| {outF}x{inF} | {tOld:F4} | {tNew:F4} | {tOld / tNew:F2}x | {gb(tOld, bytes):F0} | {gb(tNew, bytes):F0} | " +
                $"{gb(tCopy, 2.0 * half):F0} | {(equal ? "yes" : "NO")} |"));
        }
        Line($"nf4dequant: {(ok ? "old, new and the CPU reference agree byte for byte" : "MISMATCH")}");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "nf4dequant.md"), report.ToString());
        return ok ? 0 : 1;
    }

    // ---- the replaced kernel (Nf4.DequantizeHalf8NestedKernel at 8104302), for the comparison only ----

    static void BaselineKernel(ArrayView<uint> packed, ArrayView<byte> qabsmax, ArrayView<float> absmax2, ArrayView<float> offset,
        ArrayView<float> code8, ArrayView<float> code4, long groups, int log2Blocksize, int isF16, ArrayView<ILGPU.Util.Int4> y)
    {
        float off = offset[0];
        for (long g = Grid.GlobalIndex.X; g < groups; g += (long)Grid.DimX * Group.DimX)
        {
            uint w = packed[g];
            long blk = (g << 3) >> log2Blocksize;
            float a = MulRn(code8[(int)qabsmax[blk]], absmax2[blk / Nf4Codec.NestedBlockSize]) + off;
            y[g] = new((int)Pair(w, 0, a, code4, isF16), (int)Pair(w, 8, a, code4, isF16), (int)Pair(w, 16, a, code4, isF16),
                (int)Pair(w, 24, a, code4, isF16));
        }
    }

    static float MulRn(float a, float b)
    {
        float r;
        if (CudaAsm.IsSupported) CudaAsm.Emit("mul.rn.f32 %0, %1, %2;", out r, a, b);
        else r = a * b;
        return r;
    }

    static uint Pair(uint w, int shift, float a, ArrayView<float> code4, int isF16)
    {
        int b = (int)((w >> shift) & 0xFF);
        float even = code4[b >> 4] * a, odd = code4[b & 15] * a;
        return isF16 != 0 ? F16(even) | ((uint)F16(odd) << 16) : Bf16(even) | ((uint)Bf16(odd) << 16);
    }

    // Cast.FloatToBf16 / FloatToF16 (internal to the kernels assembly), the same round-to-nearest-even bit operations.
    static ushort Bf16(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) return (ushort)((bits >> 16) | 0x0040);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    static ushort F16(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        uint sign = (bits >> 16) & 0x8000;
        uint abs = bits & 0x7FFFFFFF;
        if (abs > 0x7F800000) return (ushort)(sign | 0x7E00 | ((abs >> 13) & 0x3FF));
        if (abs >= 0x477FF000) return (ushort)(sign | 0x7C00);
        if (abs >= 0x38800000)
        {
            uint a = abs - 0x38000000;
            return (ushort)(sign | ((a + 0xFFF + ((a >> 13) & 1)) >> 13));
        }
        if (abs <= 0x33000000) return (ushort)sign;
        int shift = 126 - (int)(abs >> 23);
        uint mant = (abs & 0x7FFFFF) | 0x800000;
        uint q = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1) != 0)) q++;
        return (ushort)(sign | q);
    }
}
