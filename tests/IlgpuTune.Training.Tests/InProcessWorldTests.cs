using System.Diagnostics;
using IlgpuTune.Core;
using IlgpuTune.Distributed;

namespace IlgpuTune.Training.Tests;

/// <summary>The in-process communicator's collectives and its failure handling.</summary>
public class InProcessWorldTests
{
    [Fact]
    public void Collectives_GiveNcclsResults()
    {
        var results = InProcessWorld.Run(3, (comm, device) =>
        {
            int r = comm.Rank;
            using var sum = Tensor.FromArray(device, [r + 1f, 10f * r], 2);
            comm.AllReduce(sum, ReduceOp.Sum);
            using var avg = Tensor.FromArray(device, [r + 1f, 10f * r], 2);
            comm.AllReduce(avg, ReduceOp.Avg);
            using var big = Tensor.FromArray(device, [r, r, 1f, 1f, 2f * r, 0f], 6);
            using var part = Tensor.Empty(device, Numerics.DType.F32, 2);
            comm.GroupStart();
            comm.ReduceScatter(big, part, ReduceOp.Sum);
            comm.GroupEnd();
            using var mine = Tensor.FromArray(device, [(float)r, -r], 2);
            using var all = Tensor.Empty(device, Numerics.DType.F32, 6);
            comm.AllGather(mine, all);
            using var b = Tensor.FromArray(device, [r * 5f], 1);
            comm.Broadcast(b, root: 2);
            return (sum.ToFloatArray(), avg.ToFloatArray(), part.ToFloatArray(), all.ToFloatArray(), b.Item());
        });
        foreach (var (sum, avg, _, all, b) in results)
        {
            Assert.Equal([6f, 30f], sum);
            Assert.Equal([2f, 10f], avg);
            Assert.Equal([0f, 0f, 1f, -1f, 2f, -2f], all);
            Assert.Equal(10f, b);
        }
        Assert.Equal([3f, 3f], results[0].Item3);  // ranks' [r, r] summed
        Assert.Equal([3f, 3f], results[1].Item3);  // [1, 1] x 3
        Assert.Equal([6f, 0f], results[2].Item3);  // [2r, 0] summed
    }

    [Fact]
    public void ARankThatThrows_StopsTheOthersWithItsMessage()
    {
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<RankFailedException>(() => InProcessWorld.Run(3, (comm, device) =>
        {
            using var t = Tensor.FromArray(device, [1f], 1);
            comm.AllReduce(t, ReduceOp.Sum);
            if (comm.Rank == 1) throw new InvalidDataException("data.jsonl line 3: expected an object");
            for (int i = 0; i < 10; i++) comm.AllReduce(t, ReduceOp.Sum); // ranks 0 and 2 wait here for rank 1
            return 0;
        }));
        Assert.Equal(1, e.FailedRank);
        Assert.Equal("rank 1 failed: data.jsonl line 3: expected an object", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), "the other ranks should stop at once");
    }

    [Fact]
    public void MismatchedSizes_AreRefused()
    {
        var e = Assert.Throws<RankFailedException>(() => InProcessWorld.Run(2, (comm, device) =>
        {
            using var big = Tensor.Zeros(device, Numerics.DType.F32, 5);
            using var part = Tensor.Zeros(device, Numerics.DType.F32, 2);
            comm.ReduceScatter(big, part, ReduceOp.Sum);
            return 0;
        }));
        Assert.Contains("expected world size 2 x 2", e.Message);
    }
}
