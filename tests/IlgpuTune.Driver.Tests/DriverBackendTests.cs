using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Driver.Tests;

// The op backend over the driver runtime, without a GPU: each op at small shapes on a RecordingRuntime of each architecture,
// which checks every launch against the precompiled PTX (kernel present, every parameter with its size, limits, shared
// memory as declared). The expected kernel sequences are those of the ILGPU launchers on CUDA for the same sizes.
public class DriverBackendTests
{
    public static TheoryData<string> Architectures => new() { "sm_80", "sm_90" };

    static (Device Device, RecordingRuntime Runtime) Open(string arch)
    {
        var runtime = new RecordingRuntime(arch);
        return (Device.FromDriver(runtime), runtime);
    }

    static Tensor F32(Device d, params int[] shape) => Tensor.Zeros(d, DType.F32, shape);

    static string[] Run(RecordingRuntime r, Action op)
    {
        r.Launches.Clear();
        op();
        return r.Launches.Select(l => l.Kernel).ToArray();
    }

    [Theory, MemberData(nameof(Architectures))]
    public void ElementwiseActivationCastAndEmbeddingLaunchTheirKernels(string arch)
    {
        var (d, r) = Open(arch);
        using var _ = d;
        var b = d.Backend;
        using Tensor x = F32(d, 6, 8), y = F32(d, 6, 8), z = F32(d, 6, 8), odd = F32(d, 7), odd2 = F32(d, 7);
        Assert.Equal(["elementwise.binary.v4"], Run(r, () => b.Add(x, y, z)));
        Assert.Equal(["elementwise.binary.v4"], Run(r, () => b.Accumulate(x, y)));
        Assert.Equal(["elementwise.binary.v4"], Run(r, () => b.Scale(x, 0.5f, y)));
        Assert.Equal(["elementwise.mul"], Run(r, () => b.Mul(x, y, z)));
        Assert.Equal(["elementwise.fill"], Run(r, () => b.Fill(odd, 1f)));
        using var bias = F32(d, 8);
        Assert.Equal(["elementwise.sumrows"], Run(r, () => b.SumRows(x, bias)));
        Assert.Equal(((6u + 767) / 768, 768u), (r.Launches[0].Grid.X, r.Launches[0].Group.X)); // ceil(extent / occupancy group)
        Assert.Equal(8, BitConverter.ToInt32(r.Launches[0].Arguments.Bytes(0))); // the extent first
        Assert.Equal([], Run(r, () => b.Copy(x, 2, y, 3, 10)));
        Assert.Equal(["activation.silu.forward"], Run(r, () => b.SiluForward(x, y)));
        Assert.Equal(["activation.silu.backward"], Run(r, () => b.SiluBackward(x, y, z)));
        Assert.Equal(["activation.swiglu.forward.v4"], Run(r, () => b.SwiGluForward(x, y, z)));
        Assert.Equal(["activation.swiglu.backward.v4"], Run(r, () => b.SwiGluBackward(x, y, z, x, y)));
        Assert.Equal(["activation.geglu.forward"], Run(r, () => b.GeGluForward(x, y, z)));
        Assert.Equal(["activation.geglu.backward"], Run(r, () => b.GeGluBackward(x, y, z, x, y)));
        Assert.Equal(["elementwise.binary.v4"], Run(r, () => b.Add(odd, odd2, odd)));
        using Tensor hb = Tensor.Zeros(d, DType.BF16, 6, 8), hf = Tensor.Zeros(d, DType.F16, 6, 8);
        Assert.Equal(["cast.tohalf.v4"], Run(r, () => b.Cast(x, hb)));
        Assert.Equal(["cast.fromhalf.v4"], Run(r, () => b.Cast(hf, x)));
        Assert.Throws<NotSupportedException>(() => b.Cast(hb, hf));
        using var ids = Tensor.FromArray(d, [1, 0, 2], 3);
        using Tensor table = F32(d, 5, 8), table16 = Tensor.Zeros(d, DType.BF16, 5, 8), e = F32(d, 3, 8);
        Assert.Equal(["embedding.forward"], Run(r, () => b.EmbeddingForward(ids, table, e)));
        Assert.Equal(["embedding.forward_half"], Run(r, () => b.EmbeddingForward(ids, table16, e)));
        Assert.Equal(["embedding.backward"], Run(r, () => b.EmbeddingBackward(e, ids, table)));
        using var index = Tensor.FromArray(d, [3, 1], 2);
        using var gathered = F32(d, 6, 2);
        Assert.Equal(["columngather.forward"], Run(r, () => b.ColumnGatherForward(x, index, gathered)));
        Assert.Equal(["columngather.backward"], Run(r, () => b.ColumnGatherBackward(gathered, index, x)));
        Assert.Equal(["dropout.apply"], Run(r, () => b.Dropout(x, 0.1f, 7, y)));
    }

    [Theory, MemberData(nameof(Architectures))]
    public void NormRopeLossAndCachedAttentionFollowTheLauncherPlans(string arch)
    {
        var (d, r) = Open(arch);
        using var _ = d;
        var b = d.Backend;
        using Tensor x = F32(d, 4, 64), w = F32(d, 64), y = F32(d, 4, 64), rstd = F32(d, 4), dW = F32(d, 64);
        Assert.Equal(["rmsnorm.forward.v4"], Run(r, () => b.RmsNormForward(x, w, 1e-5f, y, rstd)));
        Assert.Equal((4u, 32u), (r.Launches[0].Grid.X, r.Launches[0].Group.X)); // 16 Float4 per row: one warp
        Assert.Equal(["rmsnorm.backward.v4", "rmsnorm.backward.weight.reduce"], Run(r, () => b.RmsNormBackward(y, x, w, rstd, y, dW)));
        using Tensor x6 = F32(d, 4, 6), w6 = F32(d, 6), y6 = F32(d, 4, 6), dW6 = F32(d, 6);
        Assert.Equal(["rmsnorm.forward"], Run(r, () => b.RmsNormForward(x6, w6, 1e-5f, y6, rstd)));
        Assert.Equal((4u, 256u, 24), (r.Launches[0].Grid.X, r.Launches[0].Group.X, r.Launches[0].SharedBytes)); // the row cached
        Assert.Equal(["rmsnorm.backward.input", "rmsnorm.backward.weight.partial", "rmsnorm.backward.weight.reduce"],
            Run(r, () => b.RmsNormBackward(y6, x6, w6, rstd, y6, dW6)));

        // 2 tokens x 2 heads x headDim 16 (vector path), then headDim 6 (scalar)
        using Tensor q = F32(d, 2, 32), cos = F32(d, 2, 8), sin = F32(d, 2, 8), qr = F32(d, 2, 32);
        Assert.Equal(["rope.rotate.v4"], Run(r, () => b.RopeForward(q, cos, sin, 2, 16, qr)));
        Assert.Equal(["rope.rotate.v4"], Run(r, () => b.RopeBackward(q, cos, sin, 2, 16, qr)));
        using Tensor q6 = F32(d, 2, 12), cos6 = F32(d, 2, 3), sin6 = F32(d, 2, 3);
        Assert.Equal(["rope.rotate"], Run(r, () => b.RopeForward(q6, cos6, sin6, 2, 6, q6)));

        using Tensor logits = F32(d, 3, 10), loss = F32(d, 3), lse = F32(d, 3);
        using var targets = Tensor.FromArray(d, [1, -100, 9], 3);
        Assert.Equal(["crossentropy.forward"], Run(r, () => b.CrossEntropyForward(logits, targets, loss, lse)));
        Assert.Equal(["crossentropy.backward"], Run(r, () => b.CrossEntropyBackward(logits, targets, lse, 1f, logits)));

        // one new token at position 3 over a 4-token cache: 2 heads over 1 kv head, headDim 16
        using Tensor q1 = F32(d, 1, 32), keys = F32(d, 8, 16), values = F32(d, 8, 16), o = F32(d, 1, 32);
        Assert.Equal(["attention.cached.probs", "attention.cached.output"], Run(r, () => b.AttentionWithCache(q1, keys, values, 3, 2, 1, 16, o)));
        Assert.Equal((2u, 256u), (r.Launches[0].Grid.X, r.Launches[0].Group.X)); // a group per (query, head) score row
    }

    [Theory, MemberData(nameof(Architectures))]
    public void MatMulsLaunchTheTiledKernelOrTheGemmPlan(string arch)
    {
        var (d, r) = Open(arch);
        using var _ = d;
        var b = d.Backend;
        using Tensor a = F32(d, 5, 7), w = F32(d, 3, 7), c = F32(d, 5, 3), bias = F32(d, 3);
        Assert.Equal(["matmul.tiled", "elementwise.addbias"], Run(r, () => b.MatMul(GemmLayout.NT, new(5, 3, 7), a, w, bias, 1f, false, c)));
        Assert.Equal((new Dim3(1, 1), new Dim3(16, 16)), (r.Launches[0].Grid, r.Launches[0].Group));
        Assert.Equal(["matmul.tiled"], Run(r, () => b.MatMul(GemmLayout.TN, new(7, 3, 5), a, c, null, 1f, true, w)));

        // 16-bit operands: the tile of Gemm.Choose (wgmma on sm_90 for wide outputs), and split-K for a long K with few tiles
        using Tensor ah = Tensor.Zeros(d, DType.BF16, 128, 512), bh = Tensor.Zeros(d, DType.BF16, 512, 512), ch = F32(d, 128, 512);
        string wide = arch == "sm_90" ? "gemm.NT.BFloat16.W2N256" : "gemm.NT.BFloat16.T2x2";
        Assert.Equal([wide], Run(r, () => b.MatMul(GemmLayout.NT, new(128, 512, 512), ah, bh, null, 1f, false, ch)));
        using Tensor ak = Tensor.Zeros(d, DType.BF16, 16, 8192), bk = Tensor.Zeros(d, DType.BF16, 16, 8192), ck = F32(d, 16, 16);
        var split = Run(r, () => b.MatMul(GemmLayout.NT, new(16, 16, 8192), ak, bk, null, 1f, false, ck));
        Assert.Equal(["gemm.NT.BFloat16.T2x1", "gemm.splitreduce"], split);
        Assert.True(r.Launches[0].Grid.Z > 1, "split-K runs the splits along grid z");
        using var c16 = Tensor.Zeros(d, DType.BF16, 128, 512);
        Assert.Equal([wide], Run(r, () => b.MatMul(GemmLayout.NT, new(128, 512, 512), ah, bh, null, 1f, false, c16)));
    }

    [Fact]
    public void GemmPlanIsTheLaunchersOwnForTheSameTarget()
    {
        // LaunchGemm (ILGPU) calls Gemm.Plan with its registry's target; the driver backend calls it with LaunchTarget.Cuda.
        var hopper = LaunchTarget.Cuda(wgmma: true, 132);
        var plan = Gemm.Plan(hopper, GemmLayout.NN, HalfType.Float16, 0x1000, 0x2000, 0x3000, false, 1, 4096, 4096, 4096, 0, 0, 0, 1f, false, 0, null, -1);
        Assert.Equal((Gemm.TileConfig.W2N256, 1), (plan.Tile, plan.Splits));
        Assert.Equal(Gemm.Choose(hopper, 1, 4096, 4096, 4096), (plan.Tile, plan.Splits));
        var ampere = Gemm.Plan(LaunchTarget.Cuda(false, 108), GemmLayout.NN, HalfType.Float16, 0x1000, 0x2000, 0x3008, false, 1, 4096, 4096, 4096, 0, 0, 0, 1f, false, 0, null, -1);
        Assert.Equal(Gemm.TileConfig.T2x2, ampere.Tile);
        Assert.Equal(0, ampere.Epilogue.VecC); // c at 0x3008 is not 16-byte aligned: scalar stores
        Assert.Throws<ArgumentException>(() => Gemm.Plan(LaunchTarget.Cuda(false, 108), GemmLayout.NN, HalfType.Float16, 0, 0, 0, false, 1, 64, 64, 64,
            0, 0, 0, 1f, false, 0, Gemm.TileConfig.W2N128, -1));
    }

    // Head dim 128 at 16 bits, where ILGPU's path takes Hopper's wgmma kernels: the driver runtime takes the mma.sync ones,
    // on sm_90 as on sm_80 (each launch is checked against that architecture's PTX by the recording runtime).
    [Theory, MemberData(nameof(Architectures))]
    public void HalfAttentionAtHeadDim128TakesTheMmaSyncKernels(string arch)
    {
        var (d, r) = Open(arch);
        using var _ = d;
        var b = d.Backend;
        var shape = new AttentionShape(1, 64, 2, 2, 128);
        using Tensor q = F32(d, 64, 256), k = F32(d, 64, 256), v = F32(d, 64, 256), o = F32(d, 64, 256);
        AttentionSaved? saved = null;
        Assert.Equal(["cast.tohalf.v4", "cast.tohalf.v4", "cast.tohalf.v4", "flashhalf.Forward.128.BFloat16"],
            Run(r, () => saved = b.AttentionForward(shape, q, k, v, null, false, Precision.BF16, o, keep: true)));
        using (saved)
        using (Tensor dQ = F32(d, 64, 256), dK = F32(d, 64, 256), dV = F32(d, 64, 256))
            Assert.Equal(["cast.tohalf.v4", "flashattention.backward.delta", "flashhalf.BackwardQuery.128.BFloat16", "flashhalf.BackwardKeyValue.128.BFloat16"],
                Run(r, () => b.AttentionBackward(saved!, o, dQ, dK, dV)));
    }

    [Theory, MemberData(nameof(Architectures))]
    public void TrainingOpsLaunchFlashAttentionLossOptimizerAndNf4Kernels(string arch)
    {
        var (d, r) = Open(arch);
        using var _ = d;
        var b = d.Backend;
        // batch 1 x seq 5, 2 heads over 1 kv head, headDim 16
        var shape = new AttentionShape(1, 5, 2, 1, 16);
        using Tensor q = F32(d, 5, 32), k = F32(d, 5, 16), v = F32(d, 5, 16), o = F32(d, 5, 32);
        AttentionSaved? saved = null;
        Assert.Equal(["flashattention.forward"], Run(r, () => saved = b.AttentionForward(shape, q, k, v, null, false, Precision.F32, o, keep: true)));
        Assert.Equal(128u, r.Launches[0].Group.X);
        using (saved)
        using (Tensor dQ = F32(d, 5, 32), dK = F32(d, 5, 16), dV = F32(d, 5, 16))
            Assert.Equal(["flashattention.backward.delta", "flashattention.backward.keyvalue", "flashattention.backward.query"],
                Run(r, () => b.AttentionBackward(saved!, o, dQ, dK, dV)));
        // bf16: q, k, v rounded, the mma.sync tensor-core kernels (head dim 16 has no wgmma variant on sm_90 either)
        Assert.Equal(["cast.tohalf.v4", "cast.tohalf.v4", "cast.tohalf.v4", "flashhalf.Forward.16.BFloat16"],
            Run(r, () => saved = b.AttentionForward(shape, q, k, v, null, false, Precision.BF16, o, keep: true)));
        Assert.Equal("flash-half", saved!.Implementation);
        using (saved)
        using (Tensor dQ = F32(d, 5, 32), dK = F32(d, 5, 16), dV = F32(d, 5, 16))
            Assert.Equal(["cast.tohalf.v4", "flashattention.backward.delta", "flashhalf.BackwardQuery.16.BFloat16", "flashhalf.BackwardKeyValue.16.BFloat16"],
                Run(r, () => b.AttentionBackward(saved!, o, dQ, dK, dV)));

        // output projection + loss over 5 rows in chunks of 4: fp32 (tiled matmuls) and bf16 (Gemm)
        using Tensor h = F32(d, 5, 16), w = F32(d, 12, 16), dH = F32(d, 5, 16), dW = F32(d, 12, 16);
        using var targets = Tensor.FromArray(d, [1, 2, -100, 3, 11], 5);
        Assert.Equal(["matmul.tiled", "crossentropy.forward", "crossentropy.backward", "matmul.tiled", "matmul.tiled",
                "matmul.tiled", "crossentropy.forward", "crossentropy.backward", "matmul.tiled", "matmul.tiled"],
            Run(r, () => b.LinearCrossEntropy(h, w, targets, 4, Precision.F32, 1f, dH, dW)));
        var bf16 = Run(r, () => b.LinearCrossEntropy(h, w, targets, 4, Precision.BF16, 1f, dH, dW));
        Assert.Equal(["cast.tohalf.v4", "cast.tohalf.v4", "gemm.NT.BFloat16.T2x1", "crossentropy.forward", "crossentropy.backward_half",
            "gemm.NN.BFloat16.T2x1", "gemm.TN.BFloat16.T2x1"], bf16[..7]);

        // AdamW over 9 parameters: two packs of eight; the grad checks
        var ps = Enumerable.Range(0, 9).Select(i => F32(d, 3 + i)).ToList();
        foreach (var p in ps) p.Grad = F32(d, p.Shape);
        long offset = 0;
        var slices = ps.Select(p => { var sl = new AdamWSlice(p, offset); offset += p.Length; return sl; }).ToList();
        using (var state = b.CreateAdamWState(offset, paged: false, 0))
            Assert.Equal(["adamw.step.multi", "adamw.step.multi"], Run(r, () => state.Step([new AdamWGroup(new AdamWStep(1e-3, 0.9, 0.999, 1e-8, 0, 1), slices)])));
        var grads = ps.Select(p => p.Grad!).ToList();
        Assert.Equal(["adamw.unscale.multi", "adamw.unscale.multi"], Run(r, () => b.UnscaleAndCheck(grads, 0.5f)));
        double[] sums = [];
        Assert.Equal(["adamw.sumsq.multi", "adamw.sumsq.multi"], Run(r, () => sums = b.SumsOfSquares(grads)));
        Assert.Equal((512u, 256u), (r.Launches[0].Grid.X, r.Launches[0].Group.X));
        Assert.Equal(9, sums.Length);
        foreach (var p in ps) { p.Grad!.Dispose(); p.Dispose(); }

        // NF4: quantize with double quantization, dequantize to bf16 (8 at a time, nested absmax) and to fp32
        using var weight = F32(d, 8, 64);
        Nf4Weight? nf4 = null;
        Assert.Equal(["nf4.quantize", "nf4.mean", "nf4.quantize8"], Run(r, () => nf4 = Nf4Weight.Quantize(weight)));
        using (nf4)
        using (Tensor yb = Tensor.Zeros(d, DType.BF16, 8, 64), yf = F32(d, 8, 64))
        {
            Assert.Equal(["nf4.dequantize.half8.nested"], Run(r, () => b.Nf4Dequantize(nf4!, yb)));
            Assert.Equal(["nf4.dequantize.absmax.scale", "nf4.dequantize.absmax.offset", "nf4.dequantize"], Run(r, () => b.Nf4Dequantize(nf4!, yf)));
        }
    }

    [Fact]
    public void OpsNotPortedNameThemselves()
    {
        var (d, _) = Open("sm_80");
        using var __ = d;
        var e = Assert.Throws<NotSupportedException>(() => d.Backend.CreateAdamWState(10, paged: true, 4));
        Assert.StartsWith("paged adamw is not supported on the driver runtime yet", e.Message);
        using Tensor experts = Tensor.Zeros(d, DType.I32, 4), counts = Tensor.Zeros(d, DType.I32, 2), order = Tensor.Zeros(d, DType.I32, 4);
        Assert.StartsWith("moe sort is not supported", Assert.Throws<NotSupportedException>(() => d.Backend.MoeSort(experts, 2, counts, order)).Message);
        Assert.Equal(DeviceKind.Cuda, d.Kind);
        Assert.Equal("recording sm_80 (driver runtime)", d.Name);
        Assert.True(d.Caps.HalfMatmuls);
    }

    [Fact]
    public void TensorsLiveInDriverMemoryAndTheWorkspaceIsCounted()
    {
        var (d, r) = Open("sm_80");
        using var _ = d;
        using var t = Tensor.FromArray(d, [1f, 2f, 3f], 3);
        Assert.Equal(512L, d.Allocator.AllocatedBytes);
        Assert.Equal(512L, r.Allocator.InUse);
        Assert.Equal(new float[3], t.ToFloatArray()); // the recorder's copies read zeros
        using Tensor x = F32(d, 4, 6), w = F32(d, 6), rstd = F32(d, 4), dW = F32(d, 6);
        long before = d.Allocator.AllocatedBytes;
        d.Backend.RmsNormBackward(x, x, w, rstd, x, dW);
        Assert.Equal(before + 24, d.Allocator.AllocatedBytes); // 1 block x 6 partial sums
    }
}
