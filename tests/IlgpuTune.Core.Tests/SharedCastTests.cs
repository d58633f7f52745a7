using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>
/// Shared 16-bit casts (Ops.SharedCast): the projections of one x under Ops.ShareHalfCast cast it once, LoRA's A and B
/// are cast once until written; results bit for bit those of a cast per product, launches counted by the kernel profile
/// on ILGPU's CPU accelerator, and a written weight cast again.
/// </summary>
public class SharedCastTests
{
    private const int Rows = 8, InF = 32, OutF = 16, R = 4;

    // Three LoRA linears on one x (q, k, v), dense or NF4 base.
    private sealed class Projections : IDisposable
    {
        public readonly Tensor X;
        public readonly Tensor[] W = new Tensor[3], A = new Tensor[3], B = new Tensor[3];
        public readonly Nf4Weight?[] Q = new Nf4Weight?[3];

        public Projections(Device d, bool nf4)
        {
            X = Tensor.FromArray(d, Rand.Floats(1, Rows * InF), Rows, InF);
            X.RequiresGrad = true;
            for (int i = 0; i < 3; i++)
            {
                W[i] = Tensor.FromArray(d, Rand.Floats(10 + i, OutF * InF, 0.5f), OutF, InF);
                if (nf4) Q[i] = Nf4Weight.Quantize(W[i], QuantType.Nf4, 64, doubleQuant: true);
                A[i] = Tensor.FromArray(d, Rand.Floats(20 + i, R * InF, 0.3f), R, InF);
                B[i] = Tensor.FromArray(d, Rand.Floats(30 + i, OutF * R, 0.3f), OutF, R);
                A[i].RequiresGrad = B[i].RequiresGrad = true;
            }
        }

        public Tensor Lora(int i) => Q[i] is { } q
            ? Ops.LoraLinear(X, q, null, A[i], B[i], 2f, 0f, new Random(0))
            : Ops.LoraLinear(X, W[i], null, A[i], B[i], 2f, 0f, new Random(0));

        // Outputs, then dX, dA, dB of a backward of Σ y_i·g_i.
        public List<float[]> ForwardBackward(bool shared)
        {
            var d = X.Device;
            var res = new List<float[]>();
            using var tape = new Tape();
            var ys = new Tensor[3];
            using (shared ? Ops.ShareHalfCast(X) : null)
                for (int i = 0; i < 3; i++) ys[i] = Lora(i);
            res.AddRange(ys.Select(y => y.ToFloatArray()));
            using var sum = Ops.Add(ys[0], ys[1]);
            using var total = Ops.Add(sum, ys[2]);
            tape.Backward(total, Tensor.FromArray(d, Rand.Floats(4, Rows * OutF), Rows, OutF));
            foreach (var y in ys) y.Dispose();
            foreach (var t in new[] { X }.Concat(A).Concat(B))
            {
                res.Add(t.Grad!.ToFloatArray());
                t.Grad.Dispose();
                t.Grad = null;
            }
            return res;
        }

        public void Dispose()
        {
            X.Dispose();
            foreach (var t in W.Concat(A).Concat(B)) t.Dispose();
            foreach (var q in Q) q?.Dispose();
        }
    }

    private static Device Bf16Device()
    {
        var d = Device.Create("ilgpu-cpu");
        d.Precision = Precision.Of(DType.BF16);
        return d;
    }

    // Casts to 16 bits launched by `work` (every fp32 -> bf16/f16 cast kernel).
    private static long CastsIn(Device d, Action work)
    {
        var profile = new KernelProfile();
        d.Kernels!.Profile = profile;
        try { work(); }
        finally
        {
            profile.Flush(d.Kernels.Accelerator);
            d.Kernels.Profile = null;
        }
        return profile.Launches("cast.tohalf") + profile.Launches("cast.tobf16") + profile.Launches("cast.tof16");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SharedCasts_GiveTheSameBits_WithFewerLaunches(bool nf4)
    {
        using var d = Bf16Device();
        using var p = new Projections(d, nf4);
        List<float[]> separate = null!, shared = null!;
        // Forward: x 3 times + A, B of 3 projections (+ the fp32 base weights, cast per use); backward: dY of each (A's and
        // B's casts dropped by the backward).
        int weights = nf4 ? 0 : 3;
        Assert.Equal(3 + 6 + weights + 3, CastsIn(d, () => separate = p.ForwardBackward(shared: false)));
        // x once.
        Assert.Equal(1 + 6 + weights + 3, CastsIn(d, () => shared = p.ForwardBackward(shared: true)));
        Assert.Equal(separate.Count, shared.Count);
        for (int i = 0; i < separate.Count; i++) Close.Assert($"output {i}", separate[i], shared[i], 0, 0);
    }

    [Fact]
    public void LoraWeightCasts_AreKeptUntilWritten()
    {
        using var d = Bf16Device();
        using var p = new Projections(d, nf4: false);
        float[] Forward()
        {
            using var y = p.Lora(0);
            return y.ToFloatArray();
        }
        float[] first = null!;
        // x, A, B and the fp32 base weight (cast per use)
        Assert.Equal(4, CastsIn(d, () => first = Forward()));
        Assert.Equal(2, CastsIn(d, () => Close.Assert("again", first, Forward(), 0, 0))); // not A and B: a checkpoint's recompute
        // A written: the next forward casts it again and sees the new values (the cached cast would give `first`).
        var newA = Rand.Floats(99, R * InF, 0.3f);
        p.A[0].CopyFrom(newA);
        float[] written = null!;
        Assert.Equal(3, CastsIn(d, () => written = Forward()));      // x, A, W
        float[] fresh;
        using (var a2 = Tensor.FromArray(d, newA, R, InF))
        using (var y2 = Ops.LoraLinear(p.X, p.W[0], null, a2, p.B[0], 2f, 0f, new Random(0)))
            fresh = y2.ToFloatArray();
        Close.Assert("after CopyFrom", fresh, written, 0, 0);
        Assert.NotEqual(first, written);
        // An in-place write by a kernel (as the optimizer does) followed by BumpVersion.
        d.Backend.Scale(p.B[0], 0.5f, p.B[0]);
        p.B[0].BumpVersion();
        var halved = Forward();
        using (var a2 = Tensor.FromArray(d, newA, R, InF))
        using (var b2 = Tensor.FromArray(d, p.B[0].ToFloatArray(), OutF, R))
        using (var y2 = Ops.LoraLinear(p.X, p.W[0], null, a2, b2, 2f, 0f, new Random(0)))
            Close.Assert("after BumpVersion", y2.ToFloatArray(), halved, 0, 0);
        Assert.NotEqual(written, halved);
    }

    // A checkpointed block's first forward drops its activations at once; keeping A's and B's casts from there to the
    // recompute would hold every layer's until backward (0.3 GiB at 7B), so they are not kept there.
    [Fact]
    public void LoraWeightCasts_AreNotKept_ByACheckpointsFirstForward()
    {
        using var d = Bf16Device();
        using var p = new Projections(d, nf4: false);
        using (new Tape())
            Assert.Equal(4, CastsIn(d, () => Tape.Checkpoint(_ => p.Lora(0), p.X).Dispose())); // x, A, B, W
        Assert.Equal(4, CastsIn(d, () => p.Lora(0).Dispose())); // A and B cast again: nothing was kept
        Assert.Equal(2, CastsIn(d, () => p.Lora(0).Dispose())); // kept outside a checkpoint
    }

    [Fact]
    public void ClosedScope_DropsTheSharedCast()
    {
        using var d = Bf16Device();
        using var p = new Projections(d, nf4: false);
        using (Ops.ShareHalfCast(p.X))
        {
            using var y = p.Lora(0);
            Assert.NotNull(p.X.SharedStorage.Half);
        }
        Assert.Null(p.X.SharedStorage.Half);
        // Outside a scope x is cast per product: a write to x is always seen.
        using (var y = p.Lora(0)) Assert.Null(p.X.SharedStorage.Half);
    }
}
