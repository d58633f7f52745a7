// Flash attention (fp32) on the GPU: first checked against the naive Attention kernel on the same GPU (odd lengths, GQA,
// packed samples, head dims 64/80/96/128; outputs poisoned with NaN), then timed like tools/bench/peer_kernels.py's SDPA
// lines: batch 1, heads = 4096 / d, causal, FLOPs fwd = 4*h*seq^2*d/2 and bwd = 2.5x that.
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;

static class AttentionBench
{
    public static int Run(string? peerFile, bool quick)
    {
        using var ctx = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling());
        using var acc = ctx.GetCudaDevice(0).CreateAccelerator(ctx);
        var k = new KernelRegistry(acc);
        Console.WriteLine($"device {acc.Name}");
        bool ok = true;
        foreach (var (batch, seq, heads, kvHeads, d, packed) in new[]
                 { (2, 300, 8, 2, 64, true), (1, 257, 4, 4, 128, false), (1, 513, 4, 1, 80, true), (3, 100, 6, 3, 96, true) })
            ok &= Check(k, batch, seq, heads, kvHeads, d, packed);

        var peers = LoadPeers(peerFile);
        Console.WriteLine("| seq | d | heads | fwd TFLOP/s | torch fwd | ratio | bwd TFLOP/s | torch bwd | ratio |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (int seq in quick ? new[] { 1024, 2048 } : new[] { 1024, 2048, 4096 })
            foreach (int d in new[] { 64, 128 })
            {
                int h = 4096 / d;
                long n = (long)seq * h * d;
                var rng = new Random(seq + d);
                float[] Rnd() { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
                using var q = acc.Allocate1D(Rnd()); using var kk = acc.Allocate1D(Rnd()); using var v = acc.Allocate1D(Rnd());
                using var dO = acc.Allocate1D(Rnd());
                using var o = acc.Allocate1D<float>(n); using var lse = acc.Allocate1D<float>((long)h * seq);
                using var delta = acc.Allocate1D<float>((long)h * seq);
                using var dQ = acc.Allocate1D<float>(n); using var dK = acc.Allocate1D<float>(n); using var dV = acc.Allocate1D<float>(n);
                void Fwd() => FlashAttention.Forward(k, q.View, kk.View, v.View, ArrayView<int>.Empty, 1, seq, h, h, d, o.View, lse.View);
                void Bwd() => FlashAttention.Backward(k, dO.View, q.View, kk.View, v.View, o.View, lse.View, ArrayView<int>.Empty, 1, seq, h, h, d,
                    delta.View, dQ.View, dK.View, dV.View);
                Fwd();
                double flops = 4.0 * h * seq * (double)seq * d / 2;
                double fwd = flops / (GemmBench.Time(acc, Fwd) * 1e-3) / 1e12;
                double bwd = 2.5 * flops / (GemmBench.Time(acc, Bwd) * 1e-3) / 1e12;
                string Peer(string op, double mine) => peers.TryGetValue((op, seq, d), out var t) ? $"{t:F1} | {mine / t:P1}" : "- | -";
                Console.WriteLine($"| {seq} | {d} | {h} | {fwd:F2} | {Peer("sdpa_fwd_causal", fwd)} | {bwd:F2} | {Peer("sdpa_bwd_causal", bwd)} |");
            }
        Console.WriteLine($"checks passed: {ok}");
        return ok ? 0 : 1;
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
        Attention.Forward(k, q.View, kk.View, v.View, segView, batch, seq, heads, kvHeads, d, probs.View, o.View);
        Attention.Backward(k, dO.View, q.View, kk.View, v.View, probs.View, batch, seq, heads, kvHeads, d, dS.View, dQ.View, dK.View, dV.View);
        FlashAttention.Forward(k, q.View, kk.View, v.View, segView, batch, seq, heads, kvHeads, d, fo.View, lse.View);
        FlashAttention.Backward(k, dO.View, q.View, kk.View, v.View, fo.View, lse.View, segView, batch, seq, heads, kvHeads, d,
            delta.View, fdQ.View, fdK.View, fdV.View);
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
