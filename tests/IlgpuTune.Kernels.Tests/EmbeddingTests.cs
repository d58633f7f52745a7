using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class EmbeddingTests(IlgpuCpuFixture gpu)
{
    static int[] Ids(int seed, int tokens, int vocab)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, tokens).Select(_ => r.Next(vocab)).ToArray();
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(5, 7, 3)]    // more tokens than vocab rows: repeated ids accumulate
    [InlineData(13, 33, 20)]
    public void Kernels_MatchCpuReference(int tokens, int hidden, int vocab)
    {
        var ids = Ids(1, tokens, vocab);
        var table = Rand.Floats(2, vocab * hidden);
        var dY = Rand.Floats(3, tokens * hidden);
        var dTable = Rand.Floats(4, vocab * hidden); // backward accumulates
        using var gids = gpu.Upload(ids); using var gtable = gpu.Upload(table); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Zeros(tokens * hidden); using var gdTable = gpu.Upload(dTable);

        Embedding.Forward(gpu.Kernels, gids.View, gtable.View, tokens, hidden, gy.View);
        Embedding.Backward(gpu.Kernels, gdY.View, gids.View, tokens, hidden, vocab, gdTable.View);
        gpu.Accelerator.Synchronize();

        var y = new float[tokens * hidden];
        Embedding.ForwardCpu<float>(ids, table, hidden, y);
        Embedding.BackwardCpu<float>(dY, ids, hidden, dTable);
        Close.Assert("y", y, gy.GetAsArray1D(), 0, 0);
        Close.Assert("dTable", dTable, gdTable.GetAsArray1D(), 1e-6, 1e-5);
    }

    [Theory]
    [InlineData(HalfType.BFloat16)]
    [InlineData(HalfType.Float16)]
    public void ForwardHalf_WidensTheRowsExactly(HalfType type)
    {
        const int tokens = 9, hidden = 5, vocab = 7;
        var ids = Ids(3, tokens, vocab);
        var values = Rand.Floats(4, vocab * hidden);
        var table = new ushort[values.Length];
        if (type == HalfType.Float16) Cast.ToF16Cpu(values, table); else Cast.ToBf16Cpu(values, table);
        var want = new float[tokens * hidden];
        Embedding.ForwardHalfCpu(ids, table, type, hidden, want);
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < hidden; j++)
            {
                ushort h = table[ids[t] * hidden + j];
                Assert.Equal(type == HalfType.Float16 ? (float)BitConverter.UInt16BitsToHalf(h) : BitConverter.Int32BitsToSingle(h << 16), want[t * hidden + j]);
            }
        using var gi = gpu.Upload(ids); using var gt = gpu.Accelerator.Allocate1D(table); using var gy = gpu.Zeros(tokens * hidden);
        Embedding.ForwardHalf(gpu.Kernels, gi.View, gt.View, type, tokens, hidden, gy.View);
        gpu.Accelerator.Synchronize();
        Assert.Equal(want, gy.GetAsArray1D());
    }

    [Fact]
    public void OutOfRangeIds_KernelsSkipThem_CpuReferenceThrows()
    {
        const int hidden = 4, vocab = 3;
        int[] ids = [1, -1, 3, 2];
        var table = Rand.Floats(1, vocab * hidden);
        var dY = Rand.Floats(2, ids.Length * hidden);
        using var gids = gpu.Upload(ids); using var gtable = gpu.Upload(table); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Upload(Rand.Floats(3, ids.Length * hidden)); using var gdTable = gpu.Zeros(vocab * hidden);

        Embedding.Forward(gpu.Kernels, gids.View, gtable.View, ids.Length, hidden, gy.View);
        Embedding.Backward(gpu.Kernels, gdY.View, gids.View, ids.Length, hidden, vocab, gdTable.View);
        gpu.Accelerator.Synchronize();

        // Same as the valid tokens alone, with zero rows where the ids were bad.
        int[] valid = [1, 2];
        var y = new float[ids.Length * hidden];
        Embedding.ForwardCpu<float>([1], table, hidden, y.AsSpan(0, hidden));
        Embedding.ForwardCpu<float>([2], table, hidden, y.AsSpan(3 * hidden, hidden));
        var dTable = new float[vocab * hidden];
        var dYValid = dY[..hidden].Concat(dY[(3 * hidden)..]).ToArray();
        Embedding.BackwardCpu<float>(dYValid, valid, hidden, dTable);
        Close.Assert("y", y, gy.GetAsArray1D(), 0, 0);
        Close.Assert("dTable", dTable, gdTable.GetAsArray1D(), 0, 0);

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Embedding.ForwardCpu<float>(ids, table, hidden, new float[y.Length]));
        Assert.Contains("token 1 has id -1", e.Message);
        var untouched = new float[vocab * hidden];
        e = Assert.Throws<ArgumentOutOfRangeException>(() => Embedding.BackwardCpu<float>(dY, [0, 2, 3, 1], hidden, untouched));
        Assert.Contains("token 2 has id 3", e.Message);
        Assert.All(untouched, v => Assert.Equal(0f, v));
    }

    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from tokens in Gen.Choose(1, 6) from hidden in Gen.Choose(1, 5) from vocab in Gen.Choose(1, 4) from seed in Gen.Choose(0, 10000)
                     select (tokens, hidden, vocab, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (tokens, hidden, vocab, seed) = s;
            var ids = Ids(seed, tokens, vocab);
            var table = Rand.Doubles(seed + 1, vocab * hidden);
            var g = Rand.Doubles(seed + 2, tokens * hidden);
            double Loss(double[] tt)
            {
                var y = new double[tokens * hidden];
                Embedding.ForwardCpu<double>(ids, tt, hidden, y);
                double l = 0;
                for (int i = 0; i < y.Length; i++) l += g[i] * y[i];
                return l;
            }
            var dTable = new double[vocab * hidden];
            Embedding.BackwardCpu<double>(g, ids, hidden, dTable);
            FiniteDifference.Check("dTable", table, dTable, Loss);
        });
    }
}
