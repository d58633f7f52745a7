using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class CrossEntropyTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(5, 33)]
    [InlineData(2, 100)]
    public void Kernel_MatchesCpuReference(int rows, int vocab)
    {
        var logits = Rand.Floats(1, rows * vocab, 8f);
        var r = new Random(rows * 1000 + vocab);
        var targets = Enumerable.Range(0, rows).Select(i => i % 3 == 1 ? CrossEntropy.IgnoreIndex : r.Next(vocab)).ToArray();
        float gradScale = 1f / Math.Max(1, targets.Count(t => t != CrossEntropy.IgnoreIndex));
        var loss = new float[rows];
        var lse = new float[rows];
        var dLogits = new float[rows * vocab];
        CrossEntropy.ForwardCpu<float>(logits, targets, rows, vocab, loss, lse);
        CrossEntropy.BackwardCpu<float>(logits, targets, lse, rows, vocab, gradScale, dLogits);

        using var gl = gpu.Upload(logits); using var gt = gpu.Upload(targets);
        using var gloss = gpu.Zeros(rows); using var glse = gpu.Zeros(rows);
        using var gd = gpu.Upload(Rand.Floats(2, rows * vocab)); // dLogits is overwritten
        CrossEntropy.Forward(gpu.Kernels, gl.View, gt.View, rows, vocab, gloss.View, glse.View);
        CrossEntropy.Backward(gpu.Kernels, gl.View, gt.View, glse.View, rows, vocab, gradScale, gd.View);
        gpu.Accelerator.Synchronize();

        Close.Assert("lossPerRow", loss, gloss.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("logSumExp", lse, glse.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dLogits", dLogits, gd.GetAsArray1D(), 1e-6, 1e-4);
    }

    [Theory]
    [InlineData(HalfType.BFloat16)]
    [InlineData(HalfType.Float16)]
    public void BackwardHalf_IsTheFp32GradientRounded(HalfType type)
    {
        const int rows = 3, vocab = 37;
        var logits = Rand.Floats(5, rows * vocab, 6f);
        int[] targets = [4, CrossEntropy.IgnoreIndex, 36];
        var loss = new float[rows];
        var lse = new float[rows];
        CrossEntropy.ForwardCpu<float>(logits, targets, rows, vocab, loss, lse);
        var want = new ushort[rows * vocab];
        CrossEntropy.BackwardHalfCpu(logits, targets, lse, rows, vocab, 0.5f, type, want);

        using var gl = gpu.Upload(logits); using var gt = gpu.Upload(targets); using var glse = gpu.Upload(lse);
        using var gd = gpu.Accelerator.Allocate1D<ushort>(rows * vocab);
        CrossEntropy.BackwardHalf(gpu.Kernels, gl.View, gt.View, glse.View, rows, vocab, 0.5f, type, gd.View);
        gpu.Accelerator.Synchronize();
        var got = gd.GetAsArray1D();

        float F(ushort h) => type == HalfType.Float16 ? (float)BitConverter.UInt16BitsToHalf(h) : BitConverter.Int32BitsToSingle(h << 16);
        // The kernel's exp and the reference's may differ in the last fp32 bit, which can flip one 16-bit rounding.
        Close.Assert("dLogits", want.Select(F).ToArray(), got.Select(F).ToArray(), 1e-7, type == HalfType.Float16 ? 1e-3 : 8e-3);
        Assert.All(Enumerable.Range(0, vocab), c => Assert.Equal(0, got[vocab + c])); // the ignored row is +0
    }

    [Fact]
    public void Kernel_TreatsStrayTargetsAsIgnored()
    {
        const int rows = 4, vocab = 5;
        var logits = Rand.Floats(3, rows * vocab, 3f);
        int[] stray = [vocab, 2, -1, int.MinValue];
        using var gl = gpu.Upload(logits); using var gt = gpu.Upload(stray);
        using var gloss = gpu.Zeros(rows); using var glse = gpu.Zeros(rows); using var gd = gpu.Upload(Rand.Floats(4, rows * vocab));
        CrossEntropy.Forward(gpu.Kernels, gl.View, gt.View, rows, vocab, gloss.View, glse.View);
        CrossEntropy.Backward(gpu.Kernels, gl.View, gt.View, glse.View, rows, vocab, 1f, gd.View);
        gpu.Accelerator.Synchronize();

        int[] asIgnored = [-100, 2, -100, -100];
        var loss = new float[rows];
        var lse = new float[rows];
        var dLogits = new float[rows * vocab];
        CrossEntropy.ForwardCpu<float>(logits, asIgnored, rows, vocab, loss, lse);
        CrossEntropy.BackwardCpu<float>(logits, asIgnored, lse, rows, vocab, 1f, dLogits);
        Close.Assert("lossPerRow", loss, gloss.GetAsArray1D(), 1e-5, 1e-5);
        Close.Assert("dLogits", dLogits, gd.GetAsArray1D(), 1e-6, 1e-4);
    }

    [Fact]
    public void Backward_MayOverwriteLogitsInPlace()
    {
        const int rows = 3, vocab = 9;
        var logits = Rand.Floats(5, rows * vocab, 4f);
        int[] targets = [4, -100, 0];
        var lse = new float[rows];
        var expected = new float[rows * vocab];
        CrossEntropy.ForwardCpu<float>(logits, targets, rows, vocab, new float[rows], lse);
        CrossEntropy.BackwardCpu<float>(logits, targets, lse, rows, vocab, 0.5f, expected);

        using var gl = gpu.Upload(logits); using var gt = gpu.Upload(targets); using var glse = gpu.Upload(lse);
        CrossEntropy.Backward(gpu.Kernels, gl.View, gt.View, glse.View, rows, vocab, 0.5f, gl.View);
        gpu.Accelerator.Synchronize();
        Close.Assert("dLogits", expected, gl.GetAsArray1D(), 1e-6, 1e-4);
    }

    [Fact]
    public void Forward_HandExample()
    {
        // Row 0: uniform over 4 classes -> ln 4. Row 1: ignored. Row 2: logits [ln 3, 0] target 0 -> -ln(3/4) = ln(4/3).
        float[] logits = [0, 0, 0, 0, 9, 9, 9, 9, MathF.Log(3), 0, -1e30f, -1e30f];
        int[] targets = [2, -100, 0];
        var loss = new double[3];
        var lse = new double[3];
        CrossEntropy.ForwardCpu<double>(logits.Select(v => (double)v).ToArray(), targets, 3, 4, loss, lse);
        Assert.Equal(Math.Log(4), loss[0], 1e-12);
        Assert.Equal(0, loss[1]);
        Assert.Equal(Math.Log(4.0 / 3), loss[2], 1e-6);
        Assert.Equal(9 + Math.Log(4), lse[1], 1e-12);
    }

    [Fact]
    public void CpuReference_RejectsStrayTargetNamingRowAndValue()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            CrossEntropy.ForwardCpu<float>(new float[6], [1, 7], 2, 3, new float[2], new float[2]));
        Assert.Contains("targets[1] = 7", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            CrossEntropy.BackwardCpu<float>(new float[6], [-2, 0], new float[2], 2, 3, 1f, new float[6]));
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from rows in Gen.Choose(1, 4) from vocab in Gen.Choose(1, 9) from seed in Gen.Choose(0, 10000) select (rows, vocab, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (rows, vocab, seed) = s;
            var r = new Random(seed);
            var targets = Enumerable.Range(0, rows).Select(_ => r.Next(3) == 0 ? CrossEntropy.IgnoreIndex : r.Next(vocab)).ToArray();
            var logits = Rand.Doubles(seed + 1, rows * vocab, 3);
            double gradScale = 0.5 + r.NextDouble();
            double Loss(double[] x)
            {
                var perRow = new double[rows];
                CrossEntropy.ForwardCpu<double>(x, targets, rows, vocab, perRow, new double[rows]);
                return gradScale * perRow.Sum();
            }
            var lse = new double[rows];
            CrossEntropy.ForwardCpu<double>(logits, targets, rows, vocab, new double[rows], lse);
            var dLogits = new double[rows * vocab];
            CrossEntropy.BackwardCpu<double>(logits, targets, lse, rows, vocab, gradScale, dLogits);
            FiniteDifference.Check("dLogits", logits, dLogits, Loss);
        });
    }
}
