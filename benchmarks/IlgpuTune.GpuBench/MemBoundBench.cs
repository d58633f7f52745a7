// Memory-bound kernels (fp32) in GB/s of bytes each must move, against the device's own copy bandwidth (issue 3 asks
// for >= 80% of it). Same timing as the GEMM bench: CUDA events, median of 7 x 10 launches after warm-up.
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;

static class MemBoundBench
{
    public static int Run(string outDir)
    {
        using var ctx = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling());
        using var acc = ctx.GetCudaDevice(0).CreateAccelerator(ctx);
        var k = new KernelRegistry(acc);
        Console.WriteLine($"device {acc.Name}");
        var rows = new JsonArray();
        double copyGbps = 0;
        void Report(string name, double bytes, Action launch)
        {
            double ms = GemmBench.Time(acc, launch);
            double gbps = bytes / (ms / 1e3) / 1e9;
            if (name == "copy") copyGbps = gbps;
            double ratio = copyGbps > 0 ? gbps / copyGbps : 1;
            Console.WriteLine($"{name,-34} {ms,9:F3} ms {gbps,8:F0} GB/s  {ratio,6:P0} of copy");
            rows.Add(new JsonObject { ["kernel"] = name, ["ms"] = ms, ["gbps"] = gbps, ["of_copy"] = ratio });
        }
        var rng = new Random(1);
        float[] Rand(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }

        const long Big = 8192L * 11008;  // one MLP activation of 8192 tokens of Llama-7B
        using var a = acc.Allocate1D(Rand(Big));
        using var b = acc.Allocate1D(Rand(Big));
        using var c = acc.Allocate1D<float>(Big);
        using var d = acc.Allocate1D<float>(Big);
        using var e = acc.Allocate1D<float>(Big);
        Report("copy", 2.0 * Big * 4, () => a.View.CopyTo(c.View));

        int r = 8192, dim = 4096;
        long n = (long)r * dim;
        using var w = acc.Allocate1D(Rand(dim));
        using var rstd = acc.Allocate1D<float>(r);
        using var dw = acc.Allocate1D<float>(dim);
        var x = a.View.SubView(0, n); var y = c.View.SubView(0, n); var dy = b.View.SubView(0, n); var dx = d.View.SubView(0, n);
        Report("rmsnorm fwd 8192x4096", 2.0 * n * 4, () => RmsNorm.Forward(k, x, w.View, r, dim, 1e-6f, y, rstd.View));
        Report("rmsnorm bwd 8192x4096", 5.0 * n * 4, () => RmsNorm.Backward(k, dy, x, w.View, rstd.View, r, dim, dx, dw.View));
        Report("swiglu fwd 8192x11008", 3.0 * Big * 4, () => Activation.SwiGluForward(k, a.View, b.View, Big, c.View));
        Report("swiglu bwd 8192x11008", 5.0 * Big * 4, () => Activation.SwiGluBackward(k, c.View, a.View, b.View, Big, d.View, e.View));

        int tokens = 8192, heads = 32, hd = 128;
        long rn = (long)tokens * heads * hd;
        using var cos = acc.Allocate1D(Rand((long)tokens * hd / 2));
        using var sin = acc.Allocate1D(Rand((long)tokens * hd / 2));
        Report("rope fwd 8192x32x128", 2.0 * rn * 4, () => Rope.Forward(k, a.View.SubView(0, rn), cos.View, sin.View, tokens, heads, hd, c.View.SubView(0, rn)));

        // AdamW over 16 tensors of 4096^2 (torch's fused AdamW bench): reads p, g, m, v and writes p, m, v.
        const int T = 16; const long P = 4096L * 4096;
        var bufs = Enumerable.Range(0, 4 * T).Select(_ => acc.Allocate1D<float>(P)).ToList();
        foreach (var buf in bufs) buf.MemSetToZero();
        var tensors = Enumerable.Range(0, T).Select(i => new AdamWTensor(bufs[4 * i].View, bufs[4 * i + 1].View, bufs[4 * i + 2].View, bufs[4 * i + 3].View)).ToList();
        long step = 1;
        Report("adamw 16x4096^2", 7.0 * T * P * 4, () => AdamW.StepMulti(k, tensors, new AdamWStep(1e-3, 0.9, 0.999, 1e-8, 0.01, step++)));
        foreach (var buf in bufs) buf.Dispose();

        int ceRows = 2048, vocab = 32000;
        long cn = (long)ceRows * vocab;
        using var targets = acc.Allocate1D(Enumerable.Range(0, ceRows).Select(i => i * 7 % vocab).ToArray());
        using var lossRows = acc.Allocate1D<float>(ceRows);
        using var lse = acc.Allocate1D<float>(ceRows);
        Report("cross-entropy fwd 2048x32000", 1.0 * cn * 4, () => CrossEntropy.Forward(k, a.View.SubView(0, cn), targets.View, ceRows, vocab, lossRows.View, lse.View));
        Report("cross-entropy bwd 2048x32000", 2.0 * cn * 4, () => CrossEntropy.Backward(k, a.View.SubView(0, cn), targets.View, lse.View, ceRows, vocab, 1f / ceRows, c.View.SubView(0, cn)));

        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "membound.json"), new JsonObject { ["device"] = acc.Name, ["kernels"] = rows }.ToJsonString(new() { WriteIndented = true }));
        return 0;
    }
}
