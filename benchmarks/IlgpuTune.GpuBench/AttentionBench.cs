// Flash attention on the GPU. Checks first: the fp32 kernels (FlashAttention) against the naive Attention kernel on the same
// GPU, and the tensor-core kernels (FlashAttentionHalf, bf16/f16) against their CPU reference on the same 16-bit-rounded
// inputs (odd lengths, GQA, packed samples, causal and not; outputs NaN-poisoned). Then the tensor-core kernels are timed like
// tools/bench/peer_sdpa.py's SDPA lines: batch 1, heads = 4096 / d, bf16, FLOPs fwd = 4*h*seq^2*d (halved when causal),
// bwd = 2.5x that (the bwd time includes the dO cast and the delta pre-pass). Then a packed row as training has them (seq 2048
// in samples of 60..140 tokens, padding last; d 128, 32 heads, causal), timed with the full loop (segmentsSorted false: every
// tile computed and masked, as before tile skipping) and with tile skipping, in TFLOP/s of the dense causal FLOPs (as the
// table above) and of the FLOPs the samples need (4*h*d*sum L(L+1)/2 fwd, 2.5x bwd). Writes attention.json and
// attention-table.md to --out.
// On a compute capability 9.0 GPU Forward runs the wgmma kernel at d 128 (unless tile skipping applies); its configurations
// (warpgroups x K/V slots, at d 64 and 128) are checked too, and timed next to the mma.sync forward
// (a registry with KernelOptions.WgmmaAttentionForward off); Backward runs the wgmma dK/dV kernel at d 128, checked by the
// half checks at d 128 and timed next to the all-mma.sync backward (WgmmaAttentionBackward off) and next to wgmma dK/dV with
// the mma.sync dQ (WgmmaAttentionBackwardQuery off).
using System.Text.Json;
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;
using IlgpuTune.Kernels.Tests;

static class AttentionBench
{
    public static int Run(string? peerFile, string outDir, bool quick)
    {
        using var ctx = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling());
        using var acc = ctx.GetCudaDevice(0).CreateAccelerator(ctx);
        using var k = new KernelRegistry(acc);
        // The same kernels with a Hopper kernel turned off, to time (and check against) the kernel it replaces.
        using var mmaSyncForward = new KernelRegistry(acc, new KernelOptions { WgmmaAttentionForward = false });
        using var mmaSyncBackward = new KernelRegistry(acc, new KernelOptions { WgmmaAttentionBackward = false });
        using var mmaSyncQuery = new KernelRegistry(acc, new KernelOptions { WgmmaAttentionBackwardQuery = false });
        using var mmaSyncAll = new KernelRegistry(acc, new KernelOptions { WgmmaAttentionForward = false, WgmmaAttentionBackward = false });
        Console.WriteLine($"device {acc.Name}");
        bool ok = true;
        foreach (var (batch, seq, heads, kvHeads, d, packed) in new[]
                 { (2, 300, 8, 2, 64, true), (1, 257, 4, 4, 128, false), (1, 513, 4, 1, 80, true), (3, 100, 6, 3, 96, true) })
            ok &= Check(k, batch, seq, heads, kvHeads, d, packed);
        foreach (var (type, batch, seq, heads, kvHeads, d, packed, causal) in new[]
                 {
                     (HalfType.BFloat16, 2, 300, 8, 2, 64, true, true), (HalfType.BFloat16, 1, 257, 4, 4, 128, false, true),
                     (HalfType.BFloat16, 1, 200, 4, 1, 16, true, false), (HalfType.BFloat16, 1, 130, 4, 2, 32, false, false),
                     (HalfType.BFloat16, 1, 520, 2, 2, 128, false, false), (HalfType.Float16, 2, 190, 4, 2, 64, true, true),
                     (HalfType.BFloat16, 1, 1024, 2, 1, 128, false, true), (HalfType.BFloat16, 1, 1000, 4, 2, 128, true, true),
                     (HalfType.BFloat16, 2, 600, 4, 4, 128, true, false), (HalfType.Float16, 1, 333, 4, 2, 128, false, true),
                 })
            ok &= CheckHalf(k, mmaSyncAll, type, batch, seq, heads, kvHeads, d, packed, causal);
        // Sliding windows (mma.sync kernels with window tile skipping; Hopper's wgmma kernels are not used for them).
        foreach (var (type, batch, seq, heads, kvHeads, d, packed, window) in new[]
                 {
                     (HalfType.BFloat16, 1, 1000, 4, 2, 128, true, 200), (HalfType.BFloat16, 2, 300, 8, 2, 64, false, 50),
                     (HalfType.Float16, 1, 333, 4, 2, 16, true, 40),
                 })
            ok &= CheckHalf(k, mmaSyncAll, type, batch, seq, heads, kvHeads, d, packed, true, window);
        // fp32 flash at Gemma 3's head dim 256, windows and an explicit scale, against the CPU reference.
        foreach (var (batch, seq, heads, kvHeads, d, window, scale) in new[]
                 { (1, 300, 2, 1, 256, 0, (float?)null), (1, 300, 4, 2, 256, 60, 0.0625f), (2, 200, 4, 2, 64, 30, null) })
            ok &= CheckFp32Window(k, batch, seq, heads, kvHeads, d, window, scale);
        bool hopper = acc is CudaAccelerator { Architecture: { Major: 9, Minor: 0 } };
        if (hopper)
            foreach (var (type, batch, seq, heads, kvHeads, d, packed, causal) in new[]
                     {
                         (HalfType.BFloat16, 2, 300, 8, 2, 64, true, true), (HalfType.BFloat16, 1, 1000, 4, 4, 128, false, true),
                         (HalfType.Float16, 1, 520, 2, 1, 128, false, false), (HalfType.BFloat16, 1, 257, 4, 2, 128, true, false),
                         (HalfType.BFloat16, 1, 777, 2, 1, 64, false, false),
                     })
                ok &= CheckWgmma(k, type, batch, seq, heads, kvHeads, d, packed, causal);

        var peers = LoadPeers(peerFile);
        var results = new JsonArray();
        var table = new List<string>();
        foreach (int seq in quick ? new[] { 1024, 2048 } : new[] { 512, 1024, 2048, 4096, 8192 })
            foreach (int d in new[] { 64, 128 })
            {
                int h = 4096 / d;
                long n = (long)seq * h * d;
                var rng = new Random(seq + d);
                float[] Rnd() { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
                using var qf = acc.Allocate1D(Rnd()); using var kf = acc.Allocate1D(Rnd()); using var vf = acc.Allocate1D(Rnd());
                using var dO = acc.Allocate1D(Rnd());
                using var q = acc.Allocate1D<ushort>(n); using var kk = acc.Allocate1D<ushort>(n); using var v = acc.Allocate1D<ushort>(n);
                using var dOh = acc.Allocate1D<ushort>(n);
                Cast.ToBf16(k, qf.View, n, q.View); Cast.ToBf16(k, kf.View, n, kk.View); Cast.ToBf16(k, vf.View, n, v.View);
                using var o = acc.Allocate1D<float>(n); using var lse = acc.Allocate1D<float>((long)h * seq);
                using var delta = acc.Allocate1D<float>((long)h * seq);
                using var dQ = acc.Allocate1D<float>(n); using var dK = acc.Allocate1D<float>(n); using var dV = acc.Allocate1D<float>(n);
                foreach (bool causal in new[] { true, false })
                {
                    void Fwd(KernelRegistry r) => FlashAttentionHalf.Forward(r, HalfType.BFloat16, new(q.View, kk.View, v.View,
                        ArrayView<int>.Empty), new(1, seq, h, h, d, causal), new(o.View, lse.View));
                    void Bwd(KernelRegistry r) => FlashAttentionHalf.Backward(r, HalfType.BFloat16, dO.View, new(q.View, kk.View,
                        v.View, ArrayView<int>.Empty), new(1, seq, h, h, d, causal), new(o.View, lse.View), dOh.View, delta.View,
                            new(dQ.View, dK.View, dV.View));
                    Fwd(k);
                    double flops = 4.0 * h * seq * (double)seq * d / (causal ? 2 : 1);
                    double fwdMs = GemmBench.Time(acc, () => Fwd(k)), bwdMs = GemmBench.Time(acc, () => Bwd(k));
                    double fwd = flops / (fwdMs * 1e-3) / 1e12, bwd = 2.5 * flops / (bwdMs * 1e-3) / 1e12;
                    // Hopper: the mma.sync forward, and each wgmma configuration (warpgroups, K/V slots)
                    double mmaSync = flops / (GemmBench.Time(acc, () => Fwd(mmaSyncForward)) * 1e-3) / 1e12;
                    // and the mma.sync backward where the wgmma dK/dV kernel applies
                    double? mmaSyncBwd = null, mmaSyncDqBwd = null;
                    if (hopper && d == 128)
                    {
                        mmaSyncBwd = 2.5 * flops / (GemmBench.Time(acc, () => Bwd(mmaSyncBackward)) * 1e-3) / 1e12;
                        mmaSyncDqBwd = 2.5 * flops / (GemmBench.Time(acc, () => Bwd(mmaSyncQuery)) * 1e-3) / 1e12;
                    }
                    var variants = new JsonObject();
                    string variantCell = "-";
                    if (hopper && FlashAttentionHalf.WgmmaHeadDims.Contains(d))
                    {
                        var cells = new List<string>();
                        foreach (var (wgs, stages) in WgmmaVariants(d))
                        {
                            double ms = GemmBench.Time(acc, () => FlashAttentionHalf.ForwardWgmma(k, HalfType.BFloat16, new(q.View,
                                kk.View, v.View, ArrayView<int>.Empty), new(1, seq, h, h, d, causal), new(o.View, lse.View), wgs, stages));
                            double tf = flops / (ms * 1e-3) / 1e12;
                            variants[$"w{wgs}s{stages}"] = Math.Round(tf, 2);
                            cells.Add($"w{wgs}s{stages} {tf:F0}");
                        }
                        variantCell = string.Join(", ", cells);
                    }
                    string tag = causal ? "_causal" : "";
                    double? pf = peers.TryGetValue(("sdpa_fwd" + tag, seq, d), out var x) ? x : null;
                    double? pb = peers.TryGetValue(("sdpa_bwd" + tag, seq, d), out var y) ? y : null;
                    string Cell(double mine, double? peer) => peer is { } t ? $"{t:F1} | {mine / t:P0}" : "- | -";
                    string line = $"| {seq} | {d} | {h} | {(causal ? "yes" : "no")} | {fwd:F1} | {Cell(fwd, pf)} | {bwd:F1} | {Cell(bwd, pb)} | " +
                        $"{mmaSync:F1} | {variantCell} | {(mmaSyncBwd is { } mb ? $"{mb:F1}" : "-")} | {(mmaSyncDqBwd is { } wq ? $"{wq:F1}" : "-")} |";
                    Console.WriteLine(line);
                    table.Add(line);
                    results.Add(new JsonObject
                    {
                        ["seq"] = seq, ["d"] = d, ["heads"] = h, ["causal"] = causal,
                        ["fwd_us"] = Math.Round(fwdMs * 1e3, 1), ["fwd_tflops"] = Math.Round(fwd, 2), ["sdpa_fwd_tflops"] = pf,
                        ["fwd_ratio"] = pf is { } a ? Math.Round(fwd / a, 3) : null,
                        ["bwd_us"] = Math.Round(bwdMs * 1e3, 1), ["bwd_tflops"] = Math.Round(bwd, 2), ["sdpa_bwd_tflops"] = pb,
                        ["bwd_ratio"] = pb is { } c ? Math.Round(bwd / c, 3) : null,
                        ["fwd_mma_sync_tflops"] = Math.Round(mmaSync, 2), ["fwd_wgmma_variants_tflops"] = variants,
                        ["bwd_mma_sync_tflops"] = mmaSyncBwd is { } m2 ? Math.Round(m2, 2) : null,
                        ["bwd_mma_sync_dq_tflops"] = mmaSyncDqBwd is { } w2 ? Math.Round(w2, 2) : null,
                    });
                }
            }
        const string head = "| seq | d | heads | causal | fwd TFLOP/s | SDPA fwd | ratio | bwd TFLOP/s | SDPA bwd | ratio | mma.sync fwd | wgmma fwd (warpgroups, slots) | mma.sync bwd | bwd, mma.sync dQ |\n" +
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";
        Console.WriteLine();
        Console.WriteLine(head);
        foreach (var l in table) Console.WriteLine(l);
        var (packedTable, packedResults) = TimePacked(mmaSyncForward, 2048, 128, 32);
        Console.WriteLine();
        Console.WriteLine(packedTable);
        Directory.CreateDirectory(outDir);
        var doc = new JsonObject
        {
            ["kernel"] = "FlashAttentionHalf (bf16 q/k/v/dO, fp32 accumulation and outputs; forward wgmma on compute capability 9.0 at d 64/128, " +
                "else mma.sync m16n8k16; backward: dQ mma.sync, dK/dV wgmma on compute capability 9.0 at d 128, else mma.sync)", ["device"] = acc.Name,
            ["checks_passed"] = ok,
            ["timing"] = "CUDA events, median of 7 pairs around 10 back-to-back launches, after 3 warm-up launches",
            ["flops"] = "fwd 4*h*seq^2*d (/2 causal), bwd 2.5x fwd; batch 1, heads 4096/d",
            ["peer"] = "torch SDPA bf16 (tools/bench/peer_sdpa.py)", ["results"] = results,
            ["packed"] = packedResults,
        };
        File.WriteAllText(Path.Combine(outDir, "attention.json"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(outDir, "attention-table.md"), head + "\n" + string.Join("\n", table) + "\n\n" + packedTable + "\n");
        Console.WriteLine($"checks passed: {ok}");
        return ok ? 0 : 1;
    }

    // One packed row of `seq` tokens (samples of 60..140 tokens, then padding), causal, bf16: the full loop vs tile skipping.
    // k: a registry with the wgmma forward off (both rows time the mma.sync forward).
    static (string Table, JsonArray Results) TimePacked(KernelRegistry k, int seq, int d, int h)
    {
        var acc = k.Accelerator;
        var rng = new Random(2048);
        var seg = new int[seq];
        var lengths = new List<int>();
        for (int at = 0; seq - at >= 140;)
        {
            int len = 60 + rng.Next(81);
            for (int t = at; t < at + len; t++) seg[t] = lengths.Count;
            lengths.Add(len);
            at += len;
        }
        for (int t = lengths.Sum(); t < seq; t++) seg[t] = int.MaxValue; // the trainer's padding: a segment of its own
        int pad = seq - lengths.Sum();
        long n = (long)seq * h * d;
        float[] Rnd() { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        using var qf = acc.Allocate1D(Rnd()); using var kf = acc.Allocate1D(Rnd()); using var vf = acc.Allocate1D(Rnd());
        using var dO = acc.Allocate1D(Rnd());
        using var q = acc.Allocate1D<ushort>(n); using var kk = acc.Allocate1D<ushort>(n); using var v = acc.Allocate1D<ushort>(n);
        using var dOh = acc.Allocate1D<ushort>(n); using var gseg = acc.Allocate1D(seg);
        Cast.ToBf16(k, qf.View, n, q.View); Cast.ToBf16(k, kf.View, n, kk.View); Cast.ToBf16(k, vf.View, n, v.View);
        using var o = acc.Allocate1D<float>(n); using var lse = acc.Allocate1D<float>((long)h * seq);
        using var delta = acc.Allocate1D<float>((long)h * seq);
        using var dQ = acc.Allocate1D<float>(n); using var dK = acc.Allocate1D<float>(n); using var dV = acc.Allocate1D<float>(n);
        double dense = 4.0 * h * seq * (double)seq * d / 2;
        double needed = 4.0 * h * d * (lengths.Sum(l => (double)l * (l + 1) / 2) + (double)pad * (pad + 1) / 2);
        var lines = new List<string>();
        var results = new JsonArray();
        var msBy = new Dictionary<bool, (double Fwd, double Bwd)>();
        // Both rows time the mma.sync forward (with and without skipping), not the Hopper wgmma forward unsorted ids would take; the
        // backward is Backward's: on Hopper at d 128 the full loop (unsorted ids) takes the wgmma dK/dV kernel, sorted ids mma.sync.
        foreach (bool sorted in new[] { false, true })
        {
            void Fwd() => FlashAttentionHalf.Forward(k, HalfType.BFloat16, new(q.View, kk.View, v.View, gseg.View, sorted), new(1,
                seq, h, h, d), new(o.View, lse.View));
            void Bwd() => FlashAttentionHalf.Backward(k, HalfType.BFloat16, dO.View, new(q.View, kk.View, v.View, gseg.View, sorted),
                new(1, seq, h, h, d), new(o.View, lse.View), dOh.View, delta.View, new(dQ.View, dK.View, dV.View));
            Fwd();
            double fwdMs = GemmBench.Time(acc, Fwd), bwdMs = GemmBench.Time(acc, Bwd);
            msBy[sorted] = (fwdMs, bwdMs);
            double T(double flops, double ms) => flops / (ms * 1e-3) / 1e12;
            string line = $"| {(sorted ? "tile skipping" : "full loop")} | {fwdMs * 1e3:F1} | {T(dense, fwdMs):F1} | {T(needed, fwdMs):F1} | " +
                          $"{bwdMs * 1e3:F1} | {T(2.5 * dense, bwdMs):F1} | {T(2.5 * needed, bwdMs):F1} |";
            Console.WriteLine(line);
            lines.Add(line);
            results.Add(new JsonObject
            {
                ["seq"] = seq, ["d"] = d, ["heads"] = h, ["causal"] = true, ["samples"] = lengths.Count, ["padding"] = pad,
                ["segments_sorted"] = sorted,
                ["fwd_us"] = Math.Round(fwdMs * 1e3, 1), ["fwd_tflops_dense_causal"] = Math.Round(T(dense, fwdMs), 2),
                ["fwd_tflops_needed"] = Math.Round(T(needed, fwdMs), 2),
                ["bwd_us"] = Math.Round(bwdMs * 1e3, 1), ["bwd_tflops_dense_causal"] = Math.Round(T(2.5 * dense, bwdMs), 2),
                ["bwd_tflops_needed"] = Math.Round(T(2.5 * needed, bwdMs), 2),
            });
        }
        string table = $"Packed row: seq {seq}, d {d}, {h} heads, causal, bf16; {lengths.Count} samples of 60..140 tokens " +
                       $"(mean {lengths.Average():F0}) + {pad} padding; needed FLOPs = {needed / dense:P1} of dense causal. " +
                       $"Speed-up fwd {msBy[false].Fwd / msBy[true].Fwd:F2}x, bwd {msBy[false].Bwd / msBy[true].Bwd:F2}x.\n" +
                       "| loop | fwd us | fwd TFLOP/s (dense causal) | fwd TFLOP/s (needed) | bwd us | bwd TFLOP/s (dense causal) | bwd TFLOP/s (needed) |\n" +
                       "|---|---|---|---|---|---|---|\n" + string.Join("\n", lines);
        return (table, results);
    }

    // n uniform values in [-scale, scale) as 16-bit bits, and the exact values those bits hold.
    static (ushort[] Bits, float[] Values) RandomHalf(Random rng, HalfType type, int n, float scale)
    {
        var f = new float[n];
        for (int i = 0; i < n; i++) f[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        var bits = new ushort[n];
        var back = new float[n];
        if (type == HalfType.BFloat16) { Cast.ToBf16Cpu(f, bits); Cast.FromBf16Cpu(bits, back); }
        else { Cast.ToF16Cpu(f, bits); Cast.FromF16Cpu(bits, back); }
        return (bits, back);
    }

    // The tensor-core kernels against FlashAttentionHalf's CPU reference on the same 16-bit inputs; outputs NaN-poisoned.
    // Packed ids (non-decreasing here) run with tile skipping, then again with the full loop, which must give the same bits.
    static bool CheckHalf(KernelRegistry k, KernelRegistry mmaSyncAll, HalfType type, int batch, int seq, int heads, int kvHeads, int d, bool packed, bool causal,
        int window = 0)
    {
        var acc = k.Accelerator;
        int qn = batch * seq * heads * d, kvn = batch * seq * kvHeads * d, rows = batch * heads * seq;
        var rng = new Random(seq * 7 + d);
        (ushort[] Bits, float[] Values) Rnd(int n, float scale) => RandomHalf(rng, type, n, scale);
        var (qb, q) = Rnd(qn, 2f); var (kb, kv) = Rnd(kvn, 2f); var (vb, v) = Rnd(kvn, 1f); var (_, dO) = Rnd(qn, 1f);
        var seg = new int[packed ? batch * seq : 1];
        for (int t = 1; t < seg.Length; t++) seg[t] = seg[t - 1] + (t % seq == 0 || rng.Next(40) == 0 ? 1 : 0);
        var segSpan = packed ? seg : [];
        var (o, lse, dQ, dK, dV) = (new float[qn], new float[rows], new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, kv, v, segSpan, new(batch, seq, heads, kvHeads, d, causal, window), o, lse);
        Attention.BackwardCpu<float>(dO, q, kv, v, segSpan, new(batch, seq, heads, kvHeads, d, causal, window), dQ, dK, dV);

        using var gq = acc.Allocate1D(qb); using var gk = acc.Allocate1D(kb); using var gv = acc.Allocate1D(vb);
        using var gdO = acc.Allocate1D(dO); using var gdOh = acc.Allocate1D<ushort>(qn); using var gseg = acc.Allocate1D(seg);
        var segView = gseg.View.SubView(0, packed ? batch * seq : 0);
        var bufs = new MemoryBuffer1D<float, Stride1D.Dense>[6];
        long[] sizes = [qn, rows, rows, qn, kvn, kvn];
        for (int i = 0; i < bufs.Length; i++) { bufs[i] = acc.Allocate1D<float>(sizes[i]); bufs[i].View.SubView(0, sizes[i]).MemSet(0xFF); }
        var (go, glse, gdelta, gdQ, gdK, gdV) = (bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5]);
        FlashAttentionHalf.Forward(k, type, new(gq.View, gk.View, gv.View, segView, packed), new(batch, seq, heads, kvHeads, d, causal, window), new(go.View, glse.View));
        FlashAttentionHalf.Backward(k, type, gdO.View, new(gq.View, gk.View, gv.View, segView, packed), new(batch, seq, heads,
            kvHeads, d, causal, window), new(go.View, glse.View), gdOh.View, gdelta.View, new(gdQ.View, gdK.View, gdV.View));
        acc.Synchronize();
        float[][] skipped = [go.GetAsArray1D(), glse.GetAsArray1D(), gdQ.GetAsArray1D(), gdK.GetAsArray1D(), gdV.GetAsArray1D()];
        double tol = type == HalfType.BFloat16 ? 2e-2 : 5e-3;
        bool ok = true;
        var line = $"check half {type} batch {batch} seq {seq} heads {heads}/{kvHeads} d {d} packed {packed} causal {causal} window {window}:";
        foreach (var (name, want, got, t) in new[] { ("o", o, go, tol), ("lse", lse, glse, 1e-4), ("dQ", dQ, gdQ, tol), ("dK", dK, gdK, tol), ("dV", dV, gdV, tol) })
        {
            var g = got.GetAsArray1D();
            double err = 0, max = 0;
            for (int i = 0; i < want.Length; i++)
            {
                err = Math.Max(err, float.IsNaN(g[i]) ? double.PositiveInfinity : Math.Abs(g[i] - want[i]));
                max = Math.Max(max, Math.Abs(want[i]));
            }
            line += $" {name} {err / max:G3}";
            ok &= err <= t * max;
        }
        if (packed)
        {
            using var fo = acc.Allocate1D<float>(qn); using var flse = acc.Allocate1D<float>(rows); using var fdQ = acc.Allocate1D<float>(qn);
            using var fdK = acc.Allocate1D<float>(kvn); using var fdV = acc.Allocate1D<float>(kvn);
            // The same (mma.sync) kernels without skipping: unsorted ids would otherwise take the wgmma kernels on Hopper.
            FlashAttentionHalf.Forward(mmaSyncAll, type, new(gq.View, gk.View, gv.View, segView), new(batch, seq, heads, kvHeads, d, causal, window), new(fo.View, flse.View));
            FlashAttentionHalf.Backward(mmaSyncAll, type, gdO.View, new(gq.View, gk.View, gv.View, segView), new(batch, seq, heads,
                kvHeads, d, causal, window), new(fo.View, flse.View), gdOh.View, gdelta.View, new(fdQ.View, fdK.View, fdV.View));
            acc.Synchronize();
            float[][] full = [fo.GetAsArray1D(), flse.GetAsArray1D(), fdQ.GetAsArray1D(), fdK.GetAsArray1D(), fdV.GetAsArray1D()];
            long differ = 0;
            for (int a = 0; a < full.Length; a++)
                for (int i = 0; i < full[a].Length; i++)
                    if (BitConverter.SingleToInt32Bits(full[a][i]) != BitConverter.SingleToInt32Bits(skipped[a][i])) differ++;
            line += differ == 0 ? "; skipping = full loop bit for bit" : $"; {differ} values differ from the full loop";
            ok &= differ == 0;
            if (d == 128)
            {
                // Unsorted: the backward Hopper takes at d 128 (wgmma kernels) on the packed ids, against the reference.
                FlashAttentionHalf.Backward(k, type, gdO.View, new(gq.View, gk.View, gv.View, segView), new(batch, seq, heads,
                    kvHeads, d, causal, window), new(go.View, glse.View), gdOh.View, gdelta.View, new(fdQ.View, fdK.View, fdV.View));
                acc.Synchronize();
                line += "; full loop";
                foreach (var (name, want, got) in new[] { ("dQ", dQ, fdQ), ("dK", dK, fdK), ("dV", dV, fdV) })
                {
                    var g = got.GetAsArray1D();
                    double err = 0, max = 0;
                    for (int i = 0; i < want.Length; i++)
                    {
                        err = Math.Max(err, float.IsNaN(g[i]) ? double.PositiveInfinity : Math.Abs(g[i] - want[i]));
                        max = Math.Max(max, Math.Abs(want[i]));
                    }
                    line += $" {name} {err / max:G3}";
                    ok &= err <= tol * max;
                }
            }
        }
        foreach (var b in bufs) b.Dispose();
        Console.WriteLine(line + (ok ? " ok" : " FAIL"));
        return ok;
    }

    // wgmma forward configurations timed and checked: (warpgroups, K/V slots).
    static (int, int)[] WgmmaVariants(int d) =>
        [(2, 2), (2, 3), .. d <= 64 ? new[] { (2, 4) } : [], (1, FlashAttentionHalf.WgmmaMaxStages(d))];

    // Each wgmma forward configuration against FlashAttentionHalf's CPU reference (o, lse); outputs NaN-poisoned.
    static bool CheckWgmma(KernelRegistry k, HalfType type, int batch, int seq, int heads, int kvHeads, int d, bool packed, bool causal)
    {
        var acc = k.Accelerator;
        int qn = batch * seq * heads * d, kvn = batch * seq * kvHeads * d, rows = batch * heads * seq;
        var rng = new Random(seq * 11 + d);
        (ushort[] Bits, float[] Values) Rnd(int n, float scale) => RandomHalf(rng, type, n, scale);
        var (qb, q) = Rnd(qn, 2f); var (kb, kv) = Rnd(kvn, 2f); var (vb, v) = Rnd(kvn, 1f);
        var seg = new int[packed ? batch * seq : 1];
        for (int t = 1; t < seg.Length; t++) seg[t] = seg[t - 1] + (t % seq == 0 || rng.Next(40) == 0 ? 1 : 0);
        var (o, lse) = (new float[qn], new float[rows]);
        Attention.ForwardCpu<float>(q, kv, v, packed ? seg : [], new(batch, seq, heads, kvHeads, d, causal), o, lse);
        using var gq = acc.Allocate1D(qb); using var gk = acc.Allocate1D(kb); using var gv = acc.Allocate1D(vb); using var gseg = acc.Allocate1D(seg);
        var segView = gseg.View.SubView(0, packed ? batch * seq : 0);
        using var go = acc.Allocate1D<float>(qn); using var glse = acc.Allocate1D<float>(rows);
        double tol = type == HalfType.BFloat16 ? 2e-2 : 5e-3;
        bool ok = true;
        foreach (var (wgs, stages) in WgmmaVariants(d))
        {
            go.View.MemSet(0xFF); glse.View.MemSet(0xFF);
            FlashAttentionHalf.ForwardWgmma(k, type, new(gq.View, gk.View, gv.View, segView), new(batch, seq, heads, kvHeads, d,
                causal), new(go.View, glse.View), wgs, stages);
            acc.Synchronize();
            var line = $"check wgmma w{wgs}s{stages} {type} batch {batch} seq {seq} heads {heads}/{kvHeads} d {d} packed {packed} causal {causal}:";
            bool good = true;
            foreach (var (name, want, got, t) in new[] { ("o", o, go, tol), ("lse", lse, glse, 1e-4) })
            {
                var g = got.GetAsArray1D();
                double err = 0, max = 0;
                for (int i = 0; i < want.Length; i++)
                {
                    err = Math.Max(err, float.IsNaN(g[i]) ? double.PositiveInfinity : Math.Abs(g[i] - want[i]));
                    max = Math.Max(max, Math.Abs(want[i]));
                }
                line += $" {name} {err / max:G3}";
                good &= err <= t * max;
            }
            Console.WriteLine(line + (good ? " ok" : " FAIL"));
            ok &= good;
        }
        return ok;
    }

    static bool Check(KernelRegistry k, int batch, int seq, int heads, int kvHeads, int d, bool packed)
    {
        var acc = k.Accelerator;
        int qn = batch * seq * heads * d, kvn = batch * seq * kvHeads * d, rows = batch * heads * seq;
        var rng = new Random(seq);
        float[] Rnd(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        var seg = new int[packed ? batch * seq : 1];
        for (int t = 1; t < seg.Length; t++) seg[t] = seg[t - 1] + (t % seq == 0 || rng.Next(40) == 0 ? 1 : 0);
        using var q = acc.Allocate1D(Rnd(qn)); using var kk = acc.Allocate1D(Rnd(kvn)); using var v = acc.Allocate1D(Rnd(kvn));
        using var dO = acc.Allocate1D(Rnd(qn)); using var gseg = acc.Allocate1D(seg);
        var segView = gseg.View.SubView(0, packed ? batch * seq : 0);
        using var probs = acc.Allocate1D<float>((long)rows * seq); using var dS = acc.Allocate1D<float>((long)rows * seq);
        var bufs = new MemoryBuffer1D<float, Stride1D.Dense>[10];
        long[] sizes = [qn, qn, kvn, kvn, qn, rows, rows, qn, kvn, kvn];
        // NaN-poisoned: an unwritten output shows
        for (int i = 0; i < bufs.Length; i++) { bufs[i] = acc.Allocate1D<float>(sizes[i]); bufs[i].View.SubView(0, sizes[i]).MemSet(0xFF); }
        var (o, dQ, dK, dV, fo, lse, delta, fdQ, fdK, fdV) = (bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], bufs[6], bufs[7], bufs[8], bufs[9]);
        NaiveAttention.Forward(k, q.View, kk.View, v.View, segView, batch, seq, heads, kvHeads, d, probs.View, o.View);
        NaiveAttention.Backward(k, dO.View, q.View, kk.View, v.View, probs.View, batch, seq, heads, kvHeads, d, dS.View, dQ.View,
            dK.View, dV.View);
        FlashAttention.Forward(k, new(q.View, kk.View, v.View, segView), new(batch, seq, heads, kvHeads, d), new(fo.View, lse.View));
        FlashAttention.Backward(k, dO.View, new(q.View, kk.View, v.View, segView), new(batch, seq, heads, kvHeads, d), new(fo.View,
            lse.View), delta.View, new(fdQ.View, fdK.View, fdV.View));
        acc.Synchronize();
        bool ok = true;
        var line = $"check batch {batch} seq {seq} heads {heads}/{kvHeads} d {d} packed {packed}:";
        foreach (var (name, want, got) in new[] { ("o", o, fo), ("dQ", dQ, fdQ), ("dK", dK, fdK), ("dV", dV, fdV) })
        {
            var (w, g) = (want.GetAsArray1D(), got.GetAsArray1D());
            double err = 0, max = 0;
            for (int i = 0; i < w.Length; i++)
            {
                err = Math.Max(err, float.IsNaN(g[i]) ? double.PositiveInfinity : Math.Abs(g[i] - w[i]));
                max = Math.Max(max, Math.Abs(w[i]));
            }
            line += $" {name} {err / max:G3}";
            ok &= err <= 1e-4 * max;
        }
        foreach (var b in bufs) b.Dispose();
        Console.WriteLine(line + (ok ? " ok" : " FAIL"));
        return ok;
    }

    static bool CheckFp32Window(KernelRegistry k, int batch, int seq, int heads, int kvHeads, int d, int window, float? scale)
    {
        var acc = k.Accelerator;
        int qn = batch * seq * heads * d, kvn = batch * seq * kvHeads * d, rows = batch * heads * seq;
        var rng = new Random(seq + d + window);
        float[] Rnd(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        var (q, kv, v, dO) = (Rnd(qn), Rnd(kvn), Rnd(kvn), Rnd(qn));
        var sizes = new Attention.Sizes(batch, seq, heads, kvHeads, d, Window: window, Scale: scale);
        var (o, lse, dQ, dK, dV) = (new float[qn], new float[rows], new float[qn], new float[kvn], new float[kvn]);
        Attention.ForwardCpu<float>(q, kv, v, [], sizes, o, lse);
        Attention.BackwardCpu<float>(dO, q, kv, v, [], sizes, dQ, dK, dV);
        using var gq = acc.Allocate1D(q); using var gk = acc.Allocate1D(kv); using var gv = acc.Allocate1D(v); using var gdO = acc.Allocate1D(dO);
        using var none = acc.Allocate1D<int>(1);
        using var go = acc.Allocate1D<float>(qn); using var glse = acc.Allocate1D<float>(rows); using var gdelta = acc.Allocate1D<float>(rows);
        using var gdQ = acc.Allocate1D<float>(qn); using var gdK = acc.Allocate1D<float>(kvn); using var gdV = acc.Allocate1D<float>(kvn);
        var inputs = new Attention.Inputs<float>(gq.View, gk.View, gv.View, none.View.SubView(0, 0));
        FlashAttention.Forward(k, inputs, sizes, new(go.View, glse.View));
        FlashAttention.Backward(k, gdO.View, inputs, sizes, new(go.View, glse.View), gdelta.View, new(gdQ.View, gdK.View, gdV.View));
        acc.Synchronize();
        bool ok = true;
        var line = $"check fp32 batch {batch} seq {seq} heads {heads}/{kvHeads} d {d} window {window} scale {scale}:";
        foreach (var (name, want, got) in new[] { ("o", o, go), ("dQ", dQ, gdQ), ("dK", dK, gdK), ("dV", dV, gdV) })
        {
            var g = got.GetAsArray1D();
            double err = 0, max = 0;
            for (int i = 0; i < want.Length; i++)
            {
                err = Math.Max(err, float.IsNaN(g[i]) ? double.PositiveInfinity : Math.Abs(g[i] - want[i]));
                max = Math.Max(max, Math.Abs(want[i]));
            }
            line += $" {name} {err / max:G3}";
            ok &= err <= 1e-4 * max;
        }
        Console.WriteLine(line + (ok ? " ok" : " FAIL"));
        return ok;
    }

    static Dictionary<(string, int, int), double> LoadPeers(string? file)
    {
        var d = new Dictionary<(string, int, int), double>();
        if (file == null || !File.Exists(file)) return d;
        foreach (var l in File.ReadLines(file))
        {
            if (!l.StartsWith('{')) continue;
            var o = JsonNode.Parse(l)!;
            if (((string?)o["op"])?.StartsWith("sdpa_") == true) d[((string)o["op"]!, (int)o["seq"]!, (int)o["d"]!)] = (double)o["tflops"]!;
        }
        return d;
    }
}
