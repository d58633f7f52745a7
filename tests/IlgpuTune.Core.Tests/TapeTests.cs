using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

public class TapeTests
{
    private static Tensor Param(Device d, float[] data, params int[] shape)
    {
        var t = Tensor.FromArray(d, data, shape);
        t.RequiresGrad = true;
        return t;
    }

    [Fact]
    public void Backward_ChainsOpsAndAccumulatesLeafGradsAcrossCalls()
    {
        using var d = Device.Create("cpu");
        using var a = Param(d, [1f, 2f, 3f], 3);
        using var b = Param(d, [4f, 5f, 6f], 3);
        for (int step = 0; step < 2; step++)
        {
            using var tape = new Tape();
            using var ab = Ops.Mul(a, b);     // a*b
            using var y = Ops.Add(ab, a);     // a*b + a  -> dA = b + 1, dB = a
            using var s = Ops.Scale(y, 2f);   // 2(ab + a)
            using var ones = Tensor.FromArray(d, [1f, 1f, 1f], 3);
            using var loss = Ops.Mul(s, ones);
            tape.Backward(loss);
            Assert.Equal(0, tape.Count);
        }
        // Two backward calls accumulate: 2 * 2 * (b + 1) and 2 * 2 * a.
        Assert.Equal([20f, 24f, 28f], a.Grad!.ToFloatArray());
        Assert.Equal([4f, 8f, 12f], b.Grad!.ToFloatArray());
        Assert.False(a.Grad.IsStorageShared);
    }

    [Fact]
    public void Add_OfTwoLeaves_GivesEachItsOwnGradient()
    {
        using var d = Device.Create("cpu");
        using var a = Param(d, [1f, 2f], 2);
        using var b = Param(d, [3f, 4f], 2);
        using var tape = new Tape();
        using var y = Ops.Add(a, b);
        using var t = Tensor.FromArray(d, [0], 1);
        using var r = Ops.Reshape(y, 1, 2);
        using var loss = Ops.CrossEntropy(r, t);
        tape.Backward(loss);
        Ops.FillInPlace(a.Grad!, 0f); // scaling one grad in place (as clipping does) must not touch the other
        Assert.NotEqual(0f, b.Grad!.ToFloatArray()[0]);
    }

    [Fact]
    public void NoGrad_RecordsNothing_AndFreesSavedActivations()
    {
        using var d = Device.Create("cpu");
        using var w = Param(d, Rand.Floats(1, 12), 3, 4);
        using var x = Tensor.FromArray(d, Rand.Floats(2, 8), 2, 4);
        long before = d.Allocator.AllocatedBytes;
        using (var tape = new Tape())
        {
            using (Tape.NoGrad())
            using (var y = Ops.Linear(x, w)) Assert.Equal(0, tape.Count);
            using (var y = Ops.Linear(x, w)) Assert.Equal(1, tape.Count);
        }
        // Disposing the tape released the saved aliases: nothing is left allocated.
        Assert.Equal(before, d.Allocator.AllocatedBytes);
    }

    [Fact]
    public void Backward_FreesIntermediatesAndSavedTensors_KeepingOnlyLeafGrads()
    {
        using var d = Device.Create("cpu");
        using var w = Param(d, Rand.Floats(1, 12), 3, 4);
        using var x = Tensor.FromArray(d, Rand.Floats(2, 8), 2, 4);
        long before = d.Allocator.AllocatedBytes;
        using (var tape = new Tape())
        {
            using var y = Ops.Linear(x, w);
            using var z = Ops.Silu(y);
            using var t = Tensor.FromArray(d, [0, 2], 2);
            using var loss = Ops.CrossEntropy(z, t);
            tape.Backward(loss);
        }
        Assert.Equal(before + CachingAllocator.RoundSize(w.Grad!.Bytes), d.Allocator.AllocatedBytes);
    }

    [Fact]
    public void Allocator_ReusesBlocks_InSteadyState()
    {
        using var d = Device.Create("cpu");
        using var w = Param(d, Rand.Floats(1, 64), 8, 8);
        using var x = Tensor.FromArray(d, Rand.Floats(2, 32), 4, 8);
        void Step()
        {
            using var tape = new Tape();
            using var y = Ops.Linear(x, w);
            using var t = Tensor.FromArray(d, [0, 1, 2, 3], 4);
            using var loss = Ops.CrossEntropy(y, t);
            tape.Backward(loss);
        }
        Step();
        Step();
        long calls = d.Allocator.BackendAllocations;
        for (int i = 0; i < 5; i++) Step();
        Assert.Equal(calls, d.Allocator.BackendAllocations);
        Assert.True(d.Allocator.PeakAllocatedBytes >= d.Allocator.AllocatedBytes);
    }

    [Theory]
    [InlineData(1, 512)]
    [InlineData(513, 1024)]
    [InlineData(1025, 1536)]
    [InlineData((1 << 19) + 1, (1 << 19) + (1 << 17))]
    [InlineData((1 << 20) + 1, (1 << 20) + (1 << 15))]
    [InlineData(3 << 20, 3 << 20)]
    [InlineData(11008L * 4096 * 2, 86L << 20)]
    [InlineData((64L << 20) + 1, (66L << 20))]
    public void Allocator_RoundsToQuarterPowersOfTwoBelow1MiBAnd32ndsAbove(long bytes, long expected) =>
        Assert.Equal(expected, CachingAllocator.RoundSize(bytes));

    [Fact]
    public void Reshape_PassesGradientBack()
    {
        using var d = Device.Create("cpu");
        using var a = Param(d, [1f, 2f, 3f, 4f], 4);
        using var tape = new Tape();
        using var r = Ops.Reshape(a, 2, 2);
        using var s = Ops.Scale(r, 3f);
        using var t = Tensor.FromArray(d, [1, 0], 2);
        using var loss = Ops.CrossEntropy(s, t);
        tape.Backward(loss);
        Assert.Equal(4, a.Grad!.Length);
        Assert.Equal([4], a.Grad.Shape);
    }

    // The checkpoint keeps its first input in bf16; on an input that already holds bf16 values (RoundTo) the recompute
    // sees exactly what the forward saw, so values and the F32 gradient equal the plain block's.
    [Fact]
    public void Checkpoint_StoringItsInputInBf16_EqualsThePlainBlockOnTheRoundedInput()
    {
        using var d = Device.Create("cpu");
        var data = Rand.Floats(7, 40);
        var dy = Rand.Floats(8, 40);
        static Tensor Block(Tensor[] t) => Ops.Mul(t[0], t[0]);
        (float[] Y, float[] G, long Peak) Run(bool checkpoint)
        {
            using var x = Tensor.FromArray(d, data, 40);
            x.RequiresGrad = true;
            using var gy = Tensor.FromArray(d, dy, 40);
            float[] y;
            d.Allocator.ResetPeak();
            using (var tape = new Tape())
            {
                using var r = Ops.RoundTo(x, DType.BF16);
                using var o = checkpoint ? Tape.Checkpoint(Block, DType.BF16, r) : Block([r]);
                y = o.ToFloatArray();
                tape.Backward(o, gy);
            }
            return (y, x.Grad!.ToFloatArray(), d.Allocator.PeakAllocatedBytes);
        }
        var plain = Run(false);
        var ckpt = Run(true);
        Assert.Equal(plain.Y, ckpt.Y);
        Assert.Equal(plain.G, ckpt.G);
        // d(r²)/dx = 2r·dy with the straight-through rounding, r the bf16 value of x
        var bits = new ushort[40];
        var r = new float[40];
        Kernels.Cast.ToBf16Cpu(data, bits);
        Kernels.Cast.FromBf16Cpu(bits, r);
        for (int i = 0; i < 40; i++) Assert.Equal(2f * r[i] * dy[i], plain.G[i]);
    }
}
