using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Core.Tests;

/// <summary>
/// The managed CPU path with a frozen BF16/F16 weight: every product widens it inside and must give exactly what expanding
/// the weight to fp32 first gives (same TensorPrimitives calls on the same values).
/// </summary>
public class CpuHalfWeightTests
{
    private static (Tensor Half, Tensor Wide) Weight(Device d, DType dtype, int seed, params int[] shape)
    {
        var data = Rand.Floats(seed, (int)Tensor.ShapeLength(shape));
        var bits = data.Select(v => dtype == DType.BF16 ? HalfBits.FloatToBf16(v) : HalfBits.FloatToF16(v)).ToArray();
        var half = Tensor.FromBytes(d, dtype, System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()), shape).Named("w");
        var wide = Tensor.FromArray(d, half.ToFloatArray(), shape).Named("w");
        return (half, wide);
    }

    // Small shapes run inline; 40 x 300 x 96 takes the thread pool and several row / column blocks with ragged ends.
    [Theory]
    [InlineData(DType.BF16, 3, 5, 7)]
    [InlineData(DType.F16, 3, 5, 7)]
    [InlineData(DType.BF16, 1, 300, 96)]
    [InlineData(DType.BF16, 40, 1100, 33)]
    [InlineData(DType.F16, 40, 300, 96)]
    public void LinearForwardAndBackward_EqualTheExpandedWeight(DType dtype, int rows, int outF, int inF)
    {
        using var d = Device.Create("cpu");
        var (half, wide) = Weight(d, dtype, 7, outF, inF);
        using (half)
        using (wide)
        {
            var xData = Rand.Floats(1, rows * inF);
            var gData = Rand.Floats(2, rows * outF);
            var bData = Rand.Floats(3, outF);
            (float[] Y, float[] DX) Run(Tensor w)
            {
                using var x = Tensor.FromArray(d, xData, rows, inF);
                using var b = Tensor.FromArray(d, bData, outF);
                x.RequiresGrad = true;
                using var tape = new Tape();
                using var y = Ops.Linear(x, w, b);
                tape.Backward(y, Tensor.FromArray(d, gData, rows, outF));
                return (y.ToFloatArray(), x.Grad!.ToFloatArray());
            }
            var expected = Run(wide);
            var actual = Run(half);
            Assert.Equal(expected.Y, actual.Y);
            Assert.Equal(expected.DX, actual.DX);
        }
    }

    [Fact]
    public void MatMul_AccumulatesAndScalesAsTheFp32Product()
    {
        using var d = Device.Create("cpu");
        var (half, wide) = Weight(d, DType.BF16, 11, 70, 50);
        using (half)
        using (wide)
        {
            using var a = Tensor.FromArray(d, Rand.Floats(12, 20 * 50), 20, 50);
            var start = Rand.Floats(13, 20 * 70);
            using var c1 = Tensor.FromArray(d, start, 20, 70);
            using var c2 = Tensor.FromArray(d, start, 20, 70);
            d.Backend.MatMul(GemmLayout.NT, new(20, 70, 50), a, wide, null, 0.5f, true, c1);
            d.Backend.MatMul(GemmLayout.NT, new(20, 70, 50), a, half, null, 0.5f, true, c2);
            Assert.Equal(c1.ToFloatArray(), c2.ToFloatArray());
            using var g = Tensor.FromArray(d, Rand.Floats(14, 20 * 70), 20, 70);
            using var n1 = Tensor.FromArray(d, Rand.Floats(15, 20 * 50), 20, 50);
            using var n2 = Tensor.FromArray(d, n1.ToFloatArray(), 20, 50);
            d.Backend.MatMul(GemmLayout.NN, new(20, 50, 70), g, wide, null, -2f, true, n1);
            d.Backend.MatMul(GemmLayout.NN, new(20, 50, 70), g, half, null, -2f, true, n2);
            Assert.Equal(n1.ToFloatArray(), n2.ToFloatArray());
        }
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void FusedOutputProjections_TakeA16BitHead(DType dtype)
    {
        using var d = Device.Create("cpu");
        int rows = 9, vocab = 130, hidden = 24;
        var (half, wide) = Weight(d, dtype, 21, vocab, hidden);
        using (half)
        using (wide)
        {
            var hData = Rand.Floats(22, rows * hidden);
            var targets = Enumerable.Range(0, rows).Select(i => i == 4 ? -100 : i * 13 % vocab).ToArray();
            (float Loss, float[] DH, float[] LogP) Run(Tensor w)
            {
                using var h = Tensor.FromArray(d, hData, rows, hidden);
                using var t = Tensor.FromArray(d, targets, rows);
                h.RequiresGrad = true;
                using var tape = new Tape();
                using var loss = Ops.LinearCrossEntropy(h, w, t, chunkTokens: 4);
                tape.Backward(loss);
                using var logp = Ops.LinearLogProbs(h, w, t, chunkTokens: 4);
                return (loss.Item(), h.Grad!.ToFloatArray(), logp.ToFloatArray());
            }
            var expected = Run(wide);
            var actual = Run(half);
            Assert.Equal(expected.Loss, actual.Loss);
            Assert.Equal(expected.DH, actual.DH);
            Assert.Equal(expected.LogP, actual.LogP);
        }
    }

    [Fact]
    public void A16BitWeight_MustBeFrozen()
    {
        using var d = Device.Create("cpu");
        var (half, wide) = Weight(d, DType.BF16, 31, 4, 6);
        using (half)
        using (wide)
        {
            half.RequiresGrad = true;
            using var x = Tensor.FromArray(d, Rand.Floats(32, 2 * 6), 2, 6);
            Assert.Contains("must be frozen", Assert.Throws<ArgumentException>(() => Ops.Linear(x, half)).Message);
        }
    }

    [Fact]
    public void ViewHost_SharesTheMemoryAndDisposesItWithTheLastAlias()
    {
        using var d = Device.Create("cpu");
        var memory = new CountingMemory(new byte[24]);
        var t = Tensor.ViewHost(d, DType.BF16, memory, 3, 4);
        t.Span<ushort>()[5] = 0x3F80; // 1.0
        Assert.Equal(0x80, memory.Bytes[10]);
        var alias = t.Reshaped(12);
        t.Dispose();
        Assert.False(memory.Disposed);
        Assert.Equal(1f, alias.ToFloatArray()[5]);
        alias.Dispose();
        Assert.True(memory.Disposed);
        Assert.Equal(0, d.Allocator.AllocatedBytes);
        var wrong = new CountingMemory(new byte[10]);
        Assert.Throws<ArgumentException>(() => Tensor.ViewHost(d, DType.BF16, wrong, 3, 4));
        Assert.True(wrong.Disposed);
    }

    private sealed class CountingMemory(byte[] bytes) : System.Buffers.MemoryManager<byte>
    {
        public byte[] Bytes { get; } = bytes;
        public bool Disposed { get; private set; }
        public override Span<byte> GetSpan() => Bytes;
        public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => throw new NotSupportedException();
        public override void Unpin() { }
        protected override void Dispose(bool disposing) => Disposed = true;
    }
}
