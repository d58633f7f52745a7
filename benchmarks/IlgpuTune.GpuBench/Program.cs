// GPU benchmarks of the kernels against PyTorch, run on the GPU machine in one invocation:
//   python3 tools/bench/peer_gemm.py > peer.jsonl        (torch.matmul, same shapes, layouts and timing method)
//   dotnet IlgpuTune.GpuBench.dll gemm --peer peer.jsonl --out DIR [--tags square,mlp,llama,lora] [--wgmma-checks (full checks of wgmma tiles only)]
// It checks every timed configuration first (random inputs, NaN-poisoned output, sampled fp64 dot products; small
// shapes in full against the CPU reference), then times with CUDA events after warm-up: the median over 7 event pairs
// of 10 back-to-back launches each. Prints a table and writes DIR/gemm.json.
//   dotnet IlgpuTune.GpuBench.dll ptx DIR   compiles the GEMM and tensor-core flash-attention kernels to PTX offline (no GPU needed)
//   dotnet IlgpuTune.GpuBench.dll membound --out DIR   memory-bound kernels in GB/s against the device copy bandwidth
//   dotnet IlgpuTune.GpuBench.dll nf4 [FIXTURE]        NF4/FP4 kernels on CUDA, byte-exact against the torch golden
//   dotnet IlgpuTune.GpuBench.dll nf4gemm [--m 4096] [--tiles T2x2,W2N128] [--out DIR]   7B-shape QLoRA linear, forward and dX:
//     dequantize + GEMM vs the fused NF4 GEMM, times and max difference, see Nf4GemmBench.cs
//   dotnet IlgpuTune.GpuBench.dll attention [--peer peers.jsonl] [--out DIR] [--quick]   flash attention (fp32 and tensor-core)
//     checked, then the tensor-core kernels timed against torch SDPA (tools/bench/peer_sdpa.py lines op=sdpa_*), see AttentionBench.cs
//   dotnet IlgpuTune.GpuBench.dll ce [--peer peers.jsonl] [--out DIR]   fused output projection + cross-entropy vs torch
//     (peer_kernels.py op=lmhead_ce_fwd_bwd), see CeBench.cs
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;

static class Program
{
    static int Main(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "gemm";
        if (mode == "ptx") return Ptx(args.Length > 1 ? args[1] : ".", args.Length > 2 ? args[2] : "");
        if (mode == "membound") return MemBoundBench.Run(Arg(args, "--out") ?? ".");
        if (mode == "nf4") return Nf4Check.Run(args.Length > 1 ? args[1] : "tests/fixtures/nf4/nf4.safetensors");
        if (mode == "nf4gemm")
            return Nf4GemmBench.Run(int.Parse(Arg(args, "--m") ?? "4096", System.Globalization.CultureInfo.InvariantCulture),
                Arg(args, "--tiles")?.Split(',') ?? [], Arg(args, "--out") ?? ".");
        string? peer = Arg(args, "--peer");
        string outDir = Arg(args, "--out") ?? ".";
        bool quick = args.Contains("--quick");
        if (mode == "ce") return CeBench.Run(peer, outDir);
        if (mode == "attention") return AttentionBench.Run(peer, outDir, quick);
        return GemmBench.Run(peer, outDir, quick, Arg(args, "--tags")?.Split(','), args.Contains("--wgmma-checks"));
    }

    static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    // prefix: only the GEMM tile configurations whose name starts with it (and no flash attention), e.g. "W" for wgmma.
    static int Ptx(string dir, string prefix)
    {
        Directory.CreateDirectory(dir);
        using var ctx = Context.Create(b => b.EnableAlgorithms());
        var backend = new PTXBackend(ctx, CudaArchitecture.SM_90, CudaInstructionSet.ISA_85, null!);
        foreach (var layout in Enum.GetValues<GemmLayout>())
            foreach (var tile in Enum.GetValues<Gemm.TileConfig>())
            {
                if (!tile.ToString().StartsWith(prefix, StringComparison.Ordinal)) continue;
                var sw = Stopwatch.StartNew();
                var kernel = Gemm.Declaration(layout, HalfType.BFloat16, tile, emulated: false);
                var ck = (PTXCompiledKernel)IlgpuKernelLoader.Compile(backend, kernel with { Passes = PtxPasses.None, Target = KernelTarget.Sm80 });
                File.WriteAllText(Path.Combine(dir, $"gemm-{layout}-{tile}-ilgpu.ptx"), ck.PTXAssembly);
                int promoted = PtxLocals.Promote(ck.PTXAssembly).Promoted;
                string ptx = IlgpuKernelLoader.PostProcess(ck.PTXAssembly, kernel);
                File.WriteAllText(Path.Combine(dir, $"gemm-{layout}-{tile}.ptx"), ptx);
                Console.Write($"promoted {promoted} .local slots; ");
                int Count(string s) => ptx.Split(s).Length - 1;
                Console.WriteLine($"{layout} {tile}: {sw.ElapsedMilliseconds} ms, {ptx.Length} chars, mma {Count("mma.sync")}, wgmma {Count("wgmma.mma_async")}, ldmatrix {Count("ldmatrix")}, " +
                    $"cp.async {Count("cp.async.cg")}, ld.local {Count("ld.local")}, st.local {Count("st.local")}, depot {LocalDepot(ptx)}");
            }
        foreach (var kind in prefix == "" ? new[] { "Forward", "BackwardQuery", "BackwardKeyValue", "ForwardWgmma", "BackwardKeyValueWgmma", "BackwardQueryWgmma" } : [])
            foreach (int d in kind == "ForwardWgmma" ? FlashAttentionHalf.WgmmaHeadDims : kind.StartsWith("Backward", StringComparison.Ordinal) && kind.EndsWith("Wgmma", StringComparison.Ordinal) ? [128] : FlashAttentionHalf.HeadDims)
            {
                var sw = Stopwatch.StartNew();
                var kernel = FlashAttentionHalf.Declaration(kind, d, HalfType.BFloat16, emulated: false, smemBytes: 0);
                var ck = (PTXCompiledKernel)IlgpuKernelLoader.Compile(backend, kernel with { Passes = PtxPasses.None, Target = KernelTarget.Sm80 });
                int promoted = PtxLocals.Promote(ck.PTXAssembly).Promoted;
                string ptx = IlgpuKernelLoader.PostProcess(ck.PTXAssembly, kernel);
                File.WriteAllText(Path.Combine(dir, $"flash-{kind}-{d}.ptx"), ptx);
                int Count(string s) => ptx.Split(s).Length - 1;
                Console.WriteLine($"flash {kind} {d}: {sw.ElapsedMilliseconds} ms, promoted {promoted}, mma {Count("mma.sync")}, wgmma {Count("wgmma.mma_async")}, ldmatrix {Count("ldmatrix")}, " +
                    $"ld.local {Count("ld.local")}, st.local {Count("st.local")}, depot {LocalDepot(ptx)}");
            }
        return 0;
    }

    static string LocalDepot(string ptx)
    {
        int i = ptx.IndexOf(".local .align", StringComparison.Ordinal);
        return i < 0 ? "none" : ptx[i..ptx.IndexOf(';', i)];
    }
}

static class GemmBench
{
    record Shape(GemmLayout Layout, int M, int N, int K, string Tag);

    // Issue 3's shapes: square, the Llama-2-7B linears at 2048 tokens (q/k/v/o, gate/up and down forward; down's dX
    // and up's dW), and the LoRA rank-64 products of a 4096-wide layer (x·Aᵀ, h·Bᵀ and their backward: dh = dy·B,
    // dB = dyᵀ·h, dx = dh·A, dA = dhᵀ·x) at 2048 and 8192 tokens.
    static readonly Shape[] Shapes =
    [
        new(GemmLayout.NT, 4096, 4096, 4096, "square"), new(GemmLayout.NN, 4096, 4096, 4096, "square"),
        new(GemmLayout.TN, 4096, 4096, 4096, "square"),
        new(GemmLayout.NT, 8192, 8192, 8192, "square"),
        new(GemmLayout.NT, 4096, 11008, 4096, "mlp"),
        new(GemmLayout.NT, 2048, 4096, 4096, "llama"), new(GemmLayout.NT, 2048, 11008, 4096, "llama"),
        new(GemmLayout.NT, 2048, 4096, 11008, "llama"), new(GemmLayout.NN, 2048, 4096, 11008, "llama"),
        new(GemmLayout.TN, 11008, 4096, 2048, "llama"),
        // A packed training row is rarely a multiple of the tile (the 7B benchmark's rows hold ~1954 tokens): tail tiles.
        new(GemmLayout.NT, 1954, 4096, 4096, "llama-1954"), new(GemmLayout.NN, 1954, 4096, 11008, "llama-1954"),
        new(GemmLayout.NT, 1954, 4096, 64, "lora"),
        new(GemmLayout.NT, 2048, 64, 4096, "lora"), new(GemmLayout.NT, 2048, 4096, 64, "lora"),
        new(GemmLayout.NN, 2048, 64, 4096, "lora"), new(GemmLayout.NN, 2048, 4096, 64, "lora"),
        new(GemmLayout.TN, 4096, 64, 2048, "lora"), new(GemmLayout.TN, 64, 4096, 2048, "lora"),
        new(GemmLayout.NT, 8192, 64, 4096, "lora"), new(GemmLayout.NT, 8192, 4096, 64, "lora"),
    ];

    // tags: only these shape kinds (square, mlp, llama, lora); wgmmaChecks: the full checks of the wgmma tiles only.
    public static int Run(string? peerFile, string outDir, bool quick, string[]? tags, bool wgmmaChecks)
    {
        var total = Stopwatch.StartNew();
        using var ctx = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling());
        using var acc = ctx.GetCudaDevice(0).CreateAccelerator(ctx);
        using var k = new KernelRegistry(acc);
        string device = acc.Name;
        Console.WriteLine($"device {device}, {acc.NumMultiprocessors} SMs, driver {((CudaAccelerator)acc).DriverVersion}");
        var peers = LoadPeers(peerFile);
        var results = new JsonArray();
        bool allOk = true;

        allOk &= FullChecks(k, wgmmaChecks);

        long maxA = 8192L * 8192, maxC = 8192L * 11008;
        var rng = new Random(7);
        var hA = RandomBf16(rng, maxA);
        var hB = RandomBf16(rng, maxA);
        using var dA = acc.Allocate1D(hA);
        using var dB = acc.Allocate1D(hB);
        using var dC = acc.Allocate1D<ushort>(maxC);

        // wgmma tiles only where they run (compute capability 9.0)
        bool hopper = acc is CudaAccelerator { Architecture: { Major: 9, Minor: 0 } };
        var tiles = new[] { Gemm.TileConfig.T2x2, Gemm.TileConfig.T2x4, Gemm.TileConfig.T2x1, Gemm.TileConfig.T1x2,
            Gemm.TileConfig.W2N128, Gemm.TileConfig.W2N128S3, Gemm.TileConfig.W2N256 }.Where(t => hopper || !Gemm.Shape(t).Wgmma).ToArray();
        foreach (var tile in tiles)
        {
            try { Resources(k, tile); }
            catch (Exception e) { Console.WriteLine($"kernel {tile}: FAILED {e.GetType().Name}: {e.Message}"); allOk = false; }
        }

        var table = new List<string>();
        foreach (var s in Shapes)
        {
            if (quick && s.M * (long)s.N * s.K > 4096L * 4096 * 4096) continue;
            if (tags != null && !tags.Contains(s.Tag)) continue;
            var (autoTile, autoSplits) = Gemm.Choose(k, 1, s.M, s.N, s.K);
            var candidates = new List<(Gemm.TileConfig Tile, int Splits)> { (autoTile, autoSplits) };
            if (s.Tag != "lora")
            {
                foreach (var t in tiles) { if (t != autoTile && t is not (Gemm.TileConfig.T2x1 or Gemm.TileConfig.T1x2)) candidates.Add((t, 1)); }
            }
            else
            {
                foreach (var t in new[] { Gemm.TileConfig.T2x1, Gemm.TileConfig.T1x2, Gemm.TileConfig.T2x2, Gemm.TileConfig.W2N128, Gemm.TileConfig.W2N256 }
                    .Where(t => hopper || !Gemm.Shape(t).Wgmma))
                    foreach (int sp in new[] { 1, autoSplits, Math.Max(1, autoSplits / 2), autoSplits * 2 })
                        if (!candidates.Contains((t, sp))) candidates.Add((t, sp));
            }
            (double Tflops, double S)? peer = peers.TryGetValue((s.Layout.ToString(), s.M, s.N, s.K), out var pv) ? pv : null;
            double flops = 2.0 * s.M * s.N * s.K;
            (double Ms, Gemm.TileConfig Tile, int Splits)? best = null;
            foreach (var (tile, splits) in candidates)
            {
                void Launch() => Gemm.LaunchGemm(k, s.Layout, HalfType.BFloat16, dA.View, dB.View, default, 1, s.M, s.N, s.K, 0, 0, 0,
                    1f, false, 1, default, dC.View, tile, splits);
                string err;
                try { err = SampledCheck(k, s, hA, hB, dC, Launch); }
                catch (Exception e) { err = "FAILED " + e.GetType().Name + ": " + e.Message; }
                if (err != "")
                {
                    allOk = false;
                    Console.WriteLine($"  {s.Layout} {s.M}x{s.N}x{s.K} {tile} splits {splits}: {err}");
                    results.Add(new JsonObject { ["layout"] = s.Layout.ToString(), ["M"] = s.M, ["N"] = s.N, ["K"] = s.K, ["tile"] = tile.ToString(), ["splits"] = splits, ["error"] = err });
                    continue;
                }
                double ms = Time(acc, Launch);
                double tf = flops / (ms * 1e-3) / 1e12;
                Console.WriteLine($"  {s.Layout} {s.M}x{s.N}x{s.K} {tile} splits {splits}: {ms * 1e3:F1} us, {tf:F1} TFLOP/s" +
                    (peer is { } p0 ? $", {tf / p0.Tflops:P0} of torch" : ""));
                results.Add(new JsonObject
                {
                    ["layout"] = s.Layout.ToString(), ["M"] = s.M, ["N"] = s.N, ["K"] = s.K, ["tag"] = s.Tag, ["tile"] = tile.ToString(),
                    ["splits"] = splits, ["auto"] = tile == autoTile && splits == autoSplits, ["us"] = Math.Round(ms * 1e3, 2),
                    ["tflops"] = Math.Round(tf, 2), ["torch_tflops"] = peer?.Tflops, ["ratio"] = peer is { } p1 ? Math.Round(tf / p1.Tflops, 3) : null,
                });
                if (best == null || ms < best.Value.Ms) best = (ms, tile, splits);
                if (tile == autoTile && splits == autoSplits)
                    table.Add($"| {s.Layout} | {s.M}×{s.N}×{s.K} | {tile}/{splits} | {tf:F1} | {(peer is { } p2 ? $"{p2.Tflops:F1} | {tf / p2.Tflops:P0}" : "- | -")} |");
            }
            if (best is { } b)
                Console.WriteLine($"best {s.Layout} {s.M}x{s.N}x{s.K}: {b.Tile} splits {b.Splits} {flops / (b.Ms * 1e-3) / 1e12:F1} TFLOP/s");
        }
        Console.WriteLine();
        Console.WriteLine("| layout | M×N×K | tile/splits (auto) | ILGPU TFLOP/s | torch TFLOP/s | ratio |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var line in table) Console.WriteLine(line);
        var doc = new JsonObject
        {
            ["kernel"] = "gemm_bf16 (bf16 in, fp32 accumulate, bf16 out)", ["device"] = device, ["checks_passed"] = allOk,
            ["timing"] = "CUDA events, median of 7 pairs around 10 back-to-back launches, after 3 warm-up launches",
            ["peer"] = "torch.matmul bf16, same method (tools/bench/peer_gemm.py)", ["results"] = results,
        };
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "gemm.json"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine($"checks passed: {allOk}; total {total.Elapsed.TotalSeconds:F0} s");
        return allOk ? 0 : 1;
    }

    static Dictionary<(string, int, int, int), (double Tflops, double S)> LoadPeers(string? file)
    {
        var d = new Dictionary<(string, int, int, int), (double, double)>();
        if (file == null || !File.Exists(file)) return d;
        foreach (var line in File.ReadLines(file))
        {
            if (!line.StartsWith('{')) continue;
            var o = JsonNode.Parse(line)!;
            d[((string)o["layout"]!, (int)o["M"]!, (int)o["N"]!, (int)o["K"]!)] = ((double)o["tflops"]!, (double)o["s"]!);
        }
        return d;
    }

    static void Resources(KernelRegistry k, Gemm.TileConfig tile)
    {
        foreach (var layout in Enum.GetValues<GemmLayout>())
        {
            var sw = Stopwatch.StartNew();
            var (regs, local) = CudaDriver.Resources((CudaKernel)Gemm.LoadedKernel(k, layout, HalfType.BFloat16, tile));
            Console.WriteLine($"kernel {layout} {tile}: {regs} registers, {local} B local memory, compile+load {sw.ElapsedMilliseconds} ms");
        }
    }

    internal static double Time(Accelerator acc, Action launch)
    {
        var stream = acc.DefaultStream;
        for (int i = 0; i < 3; i++) launch();
        stream.Synchronize();
        var per = new List<double>();
        for (int r = 0; r < 7; r++)
        {
            using var m0 = stream.AddProfilingMarker();
            for (int i = 0; i < 10; i++) launch();
            using var m1 = stream.AddProfilingMarker();
            m1.Synchronize();
            per.Add((m1 - m0).TotalMilliseconds / 10);
        }
        per.Sort();
        return per[per.Count / 2];
    }

    static ushort[] RandomBf16(Random rng, long n)
    {
        var f = new float[n];
        for (long i = 0; i < n; i++) f[i] = (float)(rng.NextDouble() * 2 - 1);
        var h = new ushort[n];
        Cast.ToBf16Cpu(f, h);
        return h;
    }

    static double Bf(ushort h) => BitConverter.UInt32BitsToSingle((uint)h << 16);

    // Poison C with NaN, run once, then compare 256 sampled outputs (and the last one) with fp64 dot products.
    static string SampledCheck(KernelRegistry k, Shape s, ushort[] hA, ushort[] hB, MemoryBuffer1D<ushort, Stride1D.Dense> dC, Action launch)
    {
        long mn = (long)s.M * s.N;
        var view = dC.View.SubView(0, mn);
        k.Accelerator.DefaultStream.Synchronize();
        view.MemSet(0xFF); // 0xFFFF: a NaN bf16
        launch();
        k.Accelerator.Synchronize();
        var c = view.GetAsArray1D();
        var rng = new Random(s.M + s.N + s.K);
        double maxErr = 0, maxRef = 0;
        for (int t = 0; t <= 256; t++)
        {
            int i = t == 256 ? s.M - 1 : rng.Next(s.M), j = t == 256 ? s.N - 1 : rng.Next(s.N);
            double want = 0;
            for (int p = 0; p < s.K; p++)
            {
                double av = s.Layout == GemmLayout.TN ? Bf(hA[(long)p * s.M + i]) : Bf(hA[(long)i * s.K + p]);
                double bv = s.Layout == GemmLayout.NT ? Bf(hB[(long)j * s.K + p]) : Bf(hB[(long)p * s.N + j]);
                want += av * bv;
            }
            double got = Bf(c[(long)i * s.N + j]);
            if (double.IsNaN(got)) return $"NaN (unwritten?) at [{i},{j}]";
            maxErr = Math.Max(maxErr, Math.Abs(got - want));
            maxRef = Math.Max(maxRef, Math.Abs(want));
        }
        long nan = 0;
        foreach (var v in c) if ((v & 0x7FFF) > 0x7F80) nan++;
        if (nan > 0) return $"{nan} NaN outputs (unwritten?)";
        double rel = maxErr / maxRef;
        return rel < 1e-2 ? "" : $"sampled max error / max |ref| = {rel:G3}";
    }

    // Full comparisons with the CPU reference at tail-heavy mid-size shapes: every layout, both input formats, bias,
    // accumulate, fp32 and 16-bit outputs, batches, split-K, and each tile configuration.
    static bool FullChecks(KernelRegistry k, bool wgmmaOnly)
    {
        bool ok = true;
        var rng = new Random(3);
        var cases = new List<(GemmLayout L, HalfType T, int Batch, int M, int N, int K, int Out, Gemm.TileConfig Tile, int Splits)>();
        foreach (var l in Enum.GetValues<GemmLayout>())
        {
            cases.Add((l, HalfType.BFloat16, 1, 300, 200, 520, 0, Gemm.TileConfig.T2x2, 1));
            cases.Add((l, HalfType.Float16, 2, 257, 129, 77, 2, Gemm.TileConfig.T2x4, 1));
            cases.Add((l, HalfType.BFloat16, 1, 131, 264, 200, 1, Gemm.TileConfig.T4x2, 1));
            cases.Add((l, HalfType.BFloat16, 3, 200, 64, 1000, 0, Gemm.TileConfig.T2x1, 5));
            cases.Add((l, HalfType.Float16, 1, 64, 72, 999, 1, Gemm.TileConfig.T2x2, 4));
            // Whole in-range group tiles (straight-line cp.async, paired stores) next to tail tiles, every output mode.
            cases.Add((l, HalfType.BFloat16, 2, 264, 392, 200, 0, Gemm.TileConfig.T2x2, 1));
            cases.Add((l, HalfType.BFloat16, 1, 264, 392, 328, 1, Gemm.TileConfig.T2x2K32, 1));
            cases.Add((l, HalfType.Float16, 2, 136, 256, 520, 0, Gemm.TileConfig.T2x2K32S6, 1));
            cases.Add((l, HalfType.Float16, 1, 264, 520, 136, 2, Gemm.TileConfig.T2x4S4, 1));
            cases.Add((l, HalfType.BFloat16, 1, 520, 264, 1024, 1, Gemm.TileConfig.T4x2, 3));
            cases.Add((l, HalfType.BFloat16, 1, 256, 64, 2048, 0, Gemm.TileConfig.T2x1, 4));
            cases.Add((l, HalfType.Float16, 1, 64, 392, 1000, 1, Gemm.TileConfig.T1x2, 3));
            // wgmma tiles (Hopper): tails in M, N and K, in-range group tiles, f16, batches, split-K, every output mode.
            if (k.Wgmma)
            {
                cases.Add((l, HalfType.BFloat16, 1, 300, 200, 520, 0, Gemm.TileConfig.W2N128, 1));
                cases.Add((l, HalfType.Float16, 2, 257, 129, 77, 2, Gemm.TileConfig.W2N256, 1));
                cases.Add((l, HalfType.BFloat16, 1, 264, 520, 1024, 1, Gemm.TileConfig.W2N256, 1));
                cases.Add((l, HalfType.Float16, 2, 136, 256, 520, 0, Gemm.TileConfig.W2N256, 1));
                cases.Add((l, HalfType.BFloat16, 1, 520, 264, 1024, 1, Gemm.TileConfig.W2N128S3, 3));
                cases.Add((l, HalfType.Float16, 1, 256, 392, 640, 1, Gemm.TileConfig.W2N128, 1));
            }
        }
        foreach (var c in cases)
        {
            if (wgmmaOnly && !Gemm.Shape(c.Tile).Wgmma) continue;
            long sA = (long)c.M * c.K + 8, sB = (long)c.K * c.N + 8, sC = (long)c.M * c.N;
            var fa = new float[sA * c.Batch]; var fb = new float[sB * c.Batch]; var fbias = new float[c.N]; var fc = new float[sC * c.Batch];
            foreach (var arr in new[] { fa, fb, fbias, fc }) for (int i = 0; i < arr.Length; i++) arr[i] = (float)(rng.NextDouble() * 2 - 1);
            ushort[] ha = new ushort[fa.Length], hb = new ushort[fb.Length], hc = new ushort[fc.Length];
            var outType = c.Out == 2 ? HalfType.Float16 : HalfType.BFloat16;
            Round(c.T, fa, ha); Round(c.T, fb, hb); Round(outType, fc, hc);
            var want = Array.ConvertAll(fc, x => (double)x);
            Gemm.BatchedCpu<double>(c.L, Array.ConvertAll(fa, x => (double)x), Array.ConvertAll(fb, x => (double)x),
                Array.ConvertAll(fbias, x => (double)x), c.Batch, c.M, c.N, c.K, sA, sB, sC, 0.5, true, want);
            using var ga = k.Accelerator.Allocate1D(ha);
            using var gb = k.Accelerator.Allocate1D(hb);
            using var gbias = k.Accelerator.Allocate1D(fbias);
            float[] got;
            try
            {
                if (c.Out == 0)
                {
                    using var gc = k.Accelerator.Allocate1D(fc);
                    Gemm.LaunchGemm(k, c.L, c.T, ga.View, gb.View, gbias.View, c.Batch, c.M, c.N, c.K, sA, sB, sC, 0.5f, true, 0, gc.View, default, c.Tile, c.Splits);
                    k.Accelerator.Synchronize();
                    got = gc.GetAsArray1D();
                }
                else
                {
                    using var gc = k.Accelerator.Allocate1D(hc);
                    Gemm.LaunchGemm(k, c.L, c.T, ga.View, gb.View, gbias.View, c.Batch, c.M, c.N, c.K, sA, sB, sC, 0.5f, true, c.Out, default, gc.View, c.Tile, c.Splits);
                    k.Accelerator.Synchronize();
                    var h = gc.GetAsArray1D();
                    got = new float[h.Length];
                    if (outType == HalfType.BFloat16) Cast.FromBf16Cpu(h, got); else Cast.FromF16Cpu(h, got);
                }
            }
            catch (Exception e)
            {
                Console.WriteLine($"check {c}: FAILED {e.GetType().Name}: {e.Message}");
                ok = false;
                continue;
            }
            double maxErr = 0, maxRef = 0; int bad = -1, nBad = 0;
            double rtol = c.Out == 0 ? 1e-5 : c.Out == 1 ? 1.0 / 256 : 1.0 / 2048;
            for (int i = 0; i < got.Length; i++)
            {
                double e = Math.Abs(got[i] - want[i]);
                if (double.IsNaN(got[i])) e = double.PositiveInfinity;
                maxErr = Math.Max(maxErr, e); maxRef = Math.Max(maxRef, Math.Abs(want[i]));
                if (!(e <= 1e-4 + rtol * Math.Abs(want[i]))) { nBad++; if (bad < 0) bad = i; }
            }
            Console.WriteLine($"check {c}: max abs err {maxErr:G3} (max |ref| {maxRef:G3}) {(bad < 0 ? "ok" : $"FAIL at {bad} ({nBad} of {got.Length} bad): {got[bad]} vs {want[bad]}")}");
            ok &= bad < 0;
        }
        return ok;
    }

    static void Round(HalfType t, float[] f, ushort[] h)
    {
        if (t == HalfType.BFloat16) Cast.ToBf16Cpu(f, h); else Cast.ToF16Cpu(f, h);
        var back = new float[f.Length];
        if (t == HalfType.BFloat16) Cast.FromBf16Cpu(h, back); else Cast.FromF16Cpu(h, back);
        back.CopyTo(f, 0);
    }
}
