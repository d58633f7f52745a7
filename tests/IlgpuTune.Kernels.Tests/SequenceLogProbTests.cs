using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class SequenceLogProbTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(5, 70)]
    public void Backward_MatchesCpuReference(int rows, int vocab)
    {
        var logits = Rand.Floats(1, rows * vocab, 6f);
        var r = new Random(rows * 100 + vocab);
        var targets = Enumerable.Range(0, rows).Select(i => i % 3 == 1 ? CrossEntropy.IgnoreIndex : r.Next(vocab)).ToArray();
        var dLogp = Rand.Floats(2, rows, 2f);
        var logp = new float[rows];
        var lse = new float[rows];
        var want = new float[rows * vocab];
        SequenceLogProb.ForwardCpu<float>(logits, targets, rows, vocab, logp, lse);
        SequenceLogProb.BackwardCpu<float>(logits, targets, lse, dLogp, rows, vocab, want);

        using var gl = gpu.Upload(logits); using var gt = gpu.Upload(targets); using var glse = gpu.Upload(lse); using var gg = gpu.Upload(dLogp);
        using var gd = gpu.Upload(Rand.Floats(3, rows * vocab)); // overwritten
        SequenceLogProb.Backward(gpu.Kernels, gl.View, gt.View, glse.View, gg.View, rows, vocab, gd.View);
        // In place, as the fused op runs it.
        SequenceLogProb.Backward(gpu.Kernels, gl.View, gt.View, glse.View, gg.View, rows, vocab, gl.View);
        gpu.Accelerator.Synchronize();
        Close.Assert("dLogits", want, gd.GetAsArray1D(), 1e-6, 1e-4);
        Close.Assert("dLogits in place", want, gl.GetAsArray1D(), 1e-6, 1e-4);
    }

    [Theory]
    [InlineData(HalfType.BFloat16)]
    [InlineData(HalfType.Float16)]
    public void BackwardHalf_IsTheFp32GradientRounded(HalfType type)
    {
        const int rows = 3, vocab = 37;
        var logits = Rand.Floats(5, rows * vocab, 6f);
        int[] targets = [4, CrossEntropy.IgnoreIndex, 36];
        float[] dLogp = [0.5f, 3f, -1.25f];
        var lse = new float[rows];
        SequenceLogProb.ForwardCpu<float>(logits, targets, rows, vocab, new float[rows], lse);
        var want = new ushort[rows * vocab];
        SequenceLogProb.BackwardHalfCpu(logits, targets, lse, dLogp, rows, vocab, type, want);

        using var gl = gpu.Upload(logits); using var gt = gpu.Upload(targets); using var glse = gpu.Upload(lse); using var gg = gpu.Upload(dLogp);
        using var gd = gpu.Accelerator.Allocate1D<ushort>(rows * vocab);
        SequenceLogProb.BackwardHalf(gpu.Kernels, gl.View, gt.View, glse.View, gg.View, rows, vocab, type, gd.View);
        gpu.Accelerator.Synchronize();
        var got = gd.GetAsArray1D();
        float F(ushort h) => type == HalfType.Float16 ? (float)BitConverter.UInt16BitsToHalf(h) : BitConverter.Int32BitsToSingle(h << 16);
        Close.Assert("dLogits", want.Select(F).ToArray(), got.Select(F).ToArray(), 1e-7, type == HalfType.Float16 ? 1e-3 : 8e-3);
        Assert.All(Enumerable.Range(0, vocab), c => Assert.Equal(0, got[vocab + c])); // the ignored row gets nothing
    }

    [Fact]
    public void Forward_HandExample()
    {
        // Uniform over 4 -> log(1/4); [ln 3, 0, -inf, -inf] target 0 -> log(3/4); ignored -> 0.
        double[] logits = [0, 0, 0, 0, Math.Log(3), 0, -1e30, -1e30, 1, 2, 3, 4];
        var logp = new double[3];
        SequenceLogProb.ForwardCpu<double>(logits, [2, 0, -100], 3, 4, logp, new double[3]);
        Assert.Equal(-Math.Log(4), logp[0], 1e-12);
        Assert.Equal(Math.Log(0.75), logp[1], 1e-12);
        Assert.Equal(0, logp[2]);
    }

    // d/dlogits of sum_r dLogp[r]·logp[r], in fp64, against central differences.
    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from rows in Gen.Choose(1, 4) from vocab in Gen.Choose(1, 9) from seed in Gen.Choose(0, 10000) select (rows, vocab, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (rows, vocab, seed) = s;
            var r = new Random(seed);
            var targets = Enumerable.Range(0, rows).Select(_ => r.Next(3) == 0 ? CrossEntropy.IgnoreIndex : r.Next(vocab)).ToArray();
            var logits = Enumerable.Range(0, rows * vocab).Select(_ => r.NextDouble() * 6 - 3).ToArray();
            var dLogp = Enumerable.Range(0, rows).Select(_ => r.NextDouble() * 4 - 2).ToArray();
            double F(double[] x)
            {
                var lp = new double[rows];
                SequenceLogProb.ForwardCpu<double>(x, targets, rows, vocab, lp, new double[rows]);
                return lp.Select((v, i) => v * dLogp[i]).Sum();
            }
            var lse = new double[rows];
            SequenceLogProb.ForwardCpu<double>(logits, targets, rows, vocab, new double[rows], lse);
            var grad = new double[rows * vocab];
            SequenceLogProb.BackwardCpu<double>(logits, targets, lse, dLogp, rows, vocab, grad);
            const double h = 1e-6;
            for (int i = 0; i < logits.Length; i++)
            {
                var p = (double[])logits.Clone();
                var m = (double[])logits.Clone();
                p[i] += h;
                m[i] -= h;
                if (Math.Abs((F(p) - F(m)) / (2 * h) - grad[i]) > 1e-6) return false;
            }
            return true;
        });
    }
}
