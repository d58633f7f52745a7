// Output projection + cross-entropy, forward and backward, as torch's peer times it (tools/bench/peer_kernels.py
// op=lmhead_ce_fwd_bwd: 4096 tokens, hidden 4096, bf16 h and W, F.cross_entropy on materialized fp32 logits).
// Ours runs through the engine (Device, Tape, Ops) with bf16 tensor-core matmuls:
//   fused   = Ops.LinearCrossEntropy (chunked: the [tokens, vocab] logits never all resident)
//   unfused = Ops.Linear + Ops.CrossEntropy (our own materialized path, for the memory ratio)
// with W trainable fp32 (full fine-tuning: dW computed) and W frozen bf16 (LoRA: no dW). Peak extra memory is our
// allocator's peak minus what was allocated before the step; "without grads" also subtracts h.grad and W.grad, which any
// path must produce. Time: Stopwatch around whole steps after warm-up (the op syncs per chunk to read the loss), median
// of 5. The fused loss and dH are checked against the unfused ones first.
using System.Diagnostics;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.Numerics;

static class CeBench
{
    public static int Run(string? peerFile, string outDir)
    {
        using var dev = Device.Create("cuda");
        dev.Precision = Precision.BF16;
        var peers = LoadPeers(peerFile);
        Console.WriteLine($"device {dev.Accelerator!.Name}");
        Console.WriteLine("| vocab | W | path | ms | torch ms | speed ratio | peak extra GiB | without grads | torch GiB | loss | dH max rel err |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        var rows = new JsonArray();
        const int tokens = 4096, hidden = 4096;
        bool allOk = true;
        foreach (int vocab in new[] { 32000, 151936 })
            foreach (bool frozen in new[] { false, true })
            {
                var rng = new Random(vocab);
                float[] Rnd(long n, float scale)
                {
                    var a = new float[n];
                    for (long i = 0; i < n; i++) a[i] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits((float)((rng.NextDouble() * 2 - 1) * scale)) & unchecked((int)0xFFFF0000));
                    return a;
                }
                using var h = Tensor.FromArray(dev, Rnd((long)tokens * hidden, 1f), tokens, hidden);
                using var w32 = Tensor.FromArray(dev, Rnd((long)vocab * hidden, 0.02f), vocab, hidden);
                using var wb = frozen ? Ops.Cast(w32, DType.BF16) : null;
                var w = wb ?? w32;
                var t = new int[tokens];
                for (int i = 0; i < tokens; i++) t[i] = rng.Next(vocab);
                using var targets = Tensor.FromArray(dev, t, tokens);
                h.RequiresGrad = true;
                w32.RequiresGrad = !frozen;

                (float Loss, float[] DH, double Ms, double PeakGiB, double GradGiB) Step(bool fused, int reps)
                {
                    var times = new List<double>();
                    float loss = 0; float[] dh = []; double peak = 0, grads = 0;
                    for (int r = 0; r < reps + 2; r++)
                    {
                        h.Grad?.Dispose(); h.Grad = null;
                        w32.Grad?.Dispose(); w32.Grad = null;
                        dev.Synchronize();
                        long before = dev.Allocator.AllocatedBytes;
                        dev.Allocator.ResetPeak();
                        var sw = Stopwatch.StartNew();
                        using (var tape = new Tape())
                        {
                            Tensor l;
                            if (fused) l = Ops.LinearCrossEntropy(h, w, targets);
                            else
                            {
                                using var logits = Ops.Linear(h, w);
                                l = Ops.CrossEntropy(logits, targets);
                            }
                            using (l)
                            {
                                tape.Backward(l);
                                dev.Synchronize();
                                if (r >= 2) times.Add(sw.Elapsed.TotalMilliseconds);
                                loss = l.Item();
                            }
                        }
                        peak = (dev.Allocator.PeakAllocatedBytes - before) / (double)(1L << 30);
                        grads = ((h.Grad?.Length ?? 0) + (w32.Grad?.Length ?? 0)) * 4.0 / (1L << 30);
                    }
                    dh = h.Grad!.ToFloatArray();
                    times.Sort();
                    return (loss, dh, times[times.Count / 2], peak, grads);
                }

                var un = Step(false, 3);
                var fu = Step(true, 5);
                double maxAbs = un.DH.Max(Math.Abs), err = 0;
                for (int i = 0; i < un.DH.Length; i++) err = Math.Max(err, Math.Abs(un.DH[i] - fu.DH[i]) / maxAbs);
                bool ok = Math.Abs(un.Loss - fu.Loss) <= 1e-3 * Math.Abs(un.Loss) && err < 2e-2;
                allOk &= ok;
                string wName = frozen ? "bf16 frozen" : "fp32 trained";
                peers.TryGetValue(vocab, out var peer);
                foreach (var (name, r) in new[] { ("unfused", un), ("fused", fu) })
                {
                    string ratio = peer.Ms > 0 ? $"{peer.Ms / r.Ms:F2}×" : "-";
                    Console.WriteLine($"| {vocab} | {wName} | {name} | {r.Ms:F1} | {(peer.Ms > 0 ? $"{peer.Ms:F1}" : "-")} | {ratio} | {r.PeakGiB:F2} | " +
                        $"{r.PeakGiB - r.GradGiB:F2} | {(peer.Ms > 0 ? $"{peer.GiB:F2}" : "-")} | {r.Loss:F4} | {(name == "fused" ? $"{err:E2}{(ok ? "" : " FAIL")}" : "")} |");
                    rows.Add(new JsonObject
                    {
                        ["vocab"] = vocab, ["tokens"] = tokens, ["hidden"] = hidden, ["weight"] = wName, ["path"] = name, ["ms"] = r.Ms,
                        ["peak_extra_gib"] = r.PeakGiB, ["grads_gib"] = r.GradGiB, ["loss"] = r.Loss,
                        ["torch_ms"] = peer.Ms > 0 ? peer.Ms : null, ["torch_peak_extra_gib"] = peer.Ms > 0 ? peer.GiB : null,
                        ["dh_max_rel_err_vs_unfused"] = name == "fused" ? err : null,
                    });
                }
            }
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "ce.json"), new JsonObject
        {
            ["device"] = dev.Accelerator!.Name, ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd"), ["rows"] = rows,
        }.ToJsonString(new() { WriteIndented = true }));
        Console.WriteLine(allOk ? "ce: all checks passed" : "ce: CHECK FAILED");
        return allOk ? 0 : 1;
    }

    static Dictionary<int, (double Ms, double GiB)> LoadPeers(string? file)
    {
        var d = new Dictionary<int, (double, double)>();
        if (file == null || !File.Exists(file)) return d;
        foreach (var l in File.ReadLines(file))
        {
            if (!l.StartsWith('{')) continue;
            var o = JsonNode.Parse(l)!;
            if ((string?)o["op"] == "lmhead_ce_fwd_bwd") d[(int)o["vocab"]!] = ((double)o["s"]! * 1e3, (double)o["peak_extra_gib"]!);
        }
        return d;
    }
}
