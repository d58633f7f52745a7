// One 7B-shape QLoRA linear on CUDA, forward (y = x·Wᵀ, NT) and input grad (dX = dY·W, NN), bf16, M = 4096 tokens, the
// Llama-2-7B weights [out, in] 4096x4096 (q/k/v/o), 11008x4096 (gate/up), 4096x11008 (down), NF4 double-quantized:
//   old   = Nf4.DequantizeHalfNested into a bf16 workspace, then Gemm (the tile Choose picks)
//   fused = Gemm.RunNf4 (the weight dequantized in the GEMM's load stage, the tile ChooseNf4 picks; --tiles A,B also times those)
// Both outputs are compared (max |fused - old|, and how many differ at all: with the same tile and split they must be
// bit-equal). Times: the median over 7 event pairs of 10 back-to-back launches (GemmBench.Time).
//   dotnet IlgpuTune.GpuBench.dll nf4gemm [--m 4096] [--tiles W2N128,T2x2] [--out DIR]
using System.Diagnostics;
using System.Globalization;
using System.Text;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

static class Nf4GemmBench
{
    public static int Run(int m, string[] extraTiles, string outDir)
    {
        var total = Stopwatch.StartNew();
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
        Line($"nf4gemm on {acc.Name}, {acc.NumMultiprocessors} SMs: M = {m} tokens, bf16, NF4 blocksize 64 double-quantized; ms per product");
        Line("| W [out, in] | product | dequant | gemm | old = dequant + gemm | fused | old / fused | tiles (old / fused) | max abs diff | differing |");
        Line("|---|---|---:|---:|---:|---:|---:|---|---:|---:|");
        var tiles = extraTiles.Select(Enum.Parse<Gemm.TileConfig>).Where(t => k.Wgmma || !Gemm.Shape(t).Wgmma).ToArray();
        bool ok = true;
        var rng = new Random(24);
        foreach (var (outF, inF) in new[] { (4096, 4096), (11008, 4096), (4096, 11008) })
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
            var op = new Nf4Operand(packed.View, qabsmax.View, absmax2.View, offset.View, code8.View, code4.View, outF, inF, Nf4Codec.BlockSize);
            using var workspace = acc.Allocate1D<ushort>(n);
            foreach (var layout in new[] { GemmLayout.NT, GemmLayout.NN })
            {
                int cols = layout == GemmLayout.NT ? outF : inF, kDim = layout == GemmLayout.NT ? inF : outF;
                var a = new float[(long)m * kDim];
                for (long i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
                var aBits = new ushort[a.Length];
                Cast.ToBf16Cpu(a, aBits);
                using var dA = acc.Allocate1D(aBits);
                using var cOld = acc.Allocate1D<float>((long)m * cols);
                using var cNew = acc.Allocate1D<float>((long)m * cols);
                void Dequant() => Nf4.DequantizeHalfNested(k, packed.View, qabsmax.View, absmax2.View, offset.View, code8.View, code4.View, n,
                    Nf4Codec.BlockSize, false, workspace.View);
                void Product() => Gemm.Batched(k, layout, HalfType.BFloat16, dA.View, workspace.View, default, 1, m, cols, kDim, 0, 0, 0, 1f, false,
                    cOld.View);
                void Fused(Gemm.TileConfig? t) => Gemm.LaunchNf4(k, layout, HalfType.BFloat16, dA.View, op, default, m, 1f, false, 0, cNew.View,
                    default, t, -1);
                Dequant();
                Product();
                cNew.MemSetToZero();
                Fused(null);
                acc.Synchronize();
                var yOld = cOld.GetAsArray1D();
                var yNew = cNew.GetAsArray1D();
                double maxDiff = 0;
                long differing = 0;
                for (long i = 0; i < yOld.Length; i++)
                {
                    double d = Math.Abs((double)yNew[i] - yOld[i]);
                    if (!(d <= maxDiff)) maxDiff = d; // NaN sticks
                    if (BitConverter.SingleToInt32Bits(yNew[i]) != BitConverter.SingleToInt32Bits(yOld[i])) differing++;
                }
                var oldTile = Gemm.Choose(k, 1, m, cols, kDim);
                var newTile = Gemm.ChooseNf4(k, m, cols, kDim);
                // Same tile and split: the same bits; else fp32 sums in another order (|y| is about 2 here).
                bool same = oldTile == newTile;
                ok &= same ? differing == 0 : maxDiff < 1e-3;
                double tDequant = GemmBench.Time(acc, Dequant), tGemm = GemmBench.Time(acc, Product);
                double tOld = GemmBench.Time(acc, () => { Dequant(); Product(); }), tNew = GemmBench.Time(acc, () => Fused(null));
                string name = layout == GemmLayout.NT ? "forward x·Wᵀ" : "dX = dY·W";
                Line(string.Create(inv, $"| {outF}x{inF} | {name} | {tDequant:F3} | {tGemm:F3} | {tOld:F3} | {tNew:F3} | {tOld / tNew:F2}x | " +
                    $"{oldTile.Tile}/{oldTile.Splits} / {newTile.Tile}/{newTile.Splits} | {maxDiff:G3} | {differing} |"));
                foreach (var t in tiles)
                    Line(string.Create(inv, $"|  | fused, tile {t} |  |  |  | {GemmBench.Time(acc, () => Fused(t)):F3} |  |  |  |  |"));
            }
        }
        Line(string.Create(inv, $"nf4gemm: {(ok ? "fused equals dequantize-then-GEMM" : "MISMATCH")} in {total.Elapsed.TotalSeconds:F0} s"));
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "nf4gemm.md"), report.ToString());
        return ok ? 0 : 1;
    }
}
