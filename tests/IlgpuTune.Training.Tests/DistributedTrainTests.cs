using IlgpuTune.Distributed;
using IlgpuTune.TestKit;
using IlgpuTune.Training.Distributed;

namespace IlgpuTune.Training.Tests;

/// <summary>`train` with several ranks on the in-process communicator: what each rank reads, logs and writes.</summary>
public class DistributedTrainTests
{
    private static readonly string[] s_short = ["max_iters=6", "save_steps=3", "logging_steps=1", "evaluation_freq=1000", "accumulative_counts=2", "device=cpu"];

    private static TrainResult[] Train(string workDir, int stage, string? resume = null, int? stopAfter = null, Action<int, int, int>? progress = null,
        string[]? extra = null) =>
        InProcessWorld.Run(2, (comm, _) => Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, [.. s_short, .. extra ?? []]), new TrainOptions
        {
            WorkDir = workDir, Resume = resume, StopAfter = stopAfter, Console = _ => { }, Communicator = comm, ZeroStage = stage,
            Progress = progress is null ? null : (done, max) => progress(comm.Rank, done, max),
        }));

    private static string Curve(TrainResult r) => string.Join("\n", r.Log.Select(x => $"{x.Iter}: loss {x.Loss:R} lr {x.Lr:R} norm {x.GradNorm:R}"));

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void TwoRanks_AgreeAndOnlyRankZeroWrites_ResumeEqualsUninterrupted(int stage)
    {
        using var a = new TempDir();
        using var b = new TempDir();
        var full = Train(a.Path, stage);
        Assert.Equal(Curve(full[0]), Curve(full[1])); // global losses and norms: the same on every rank
        Assert.Equal(6, full[0].Log.Count);
        Assert.True(full[0].Log[^1].Loss < full[0].Log[0].Loss, "loss should fall");
        Assert.NotEqual("", full[0].RunDir);
        Assert.Equal("", full[1].RunDir); // rank 1 opened no log folder
        Assert.NotNull(full[0].AdapterDir);
        Assert.Null(full[1].AdapterDir);
        Assert.Equal(["iter_3", "iter_6"], Checkpoint.List(a.Path).Select(c => Path.GetFileName(c.Dir)));

        Train(b.Path, stage, stopAfter: 4);
        var resumed = Train(b.Path, stage, resume: "");
        Assert.Equal(Curve(full[0]), Curve(resumed[0]));
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.Path, "adapter", "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(b.Path, "adapter", "adapter_model.safetensors")));
    }

    [Fact]
    public void QLora_TwoRanksZero1_TrainsTheAdaptersOnly()
    {
        using var a = new TempDir();
        var runs = Train(a.Path, stage: 1, extra: ["quantization=nf4", "max_iters=4"]);
        Assert.Equal(Curve(runs[0]), Curve(runs[1]));
        Assert.True(runs[0].Log[^1].Loss < runs[0].Log[0].Loss, "loss should fall");
        Assert.True(File.Exists(Path.Combine(a.Path, "adapter", "adapter_model.safetensors")));
    }

    [Fact]
    public void ACheckpointOfTwoRanks_ResumesOnOne()
    {
        using var a = new TempDir();
        Train(a.Path, stage: 1, stopAfter: 3);
        // Consolidated in the single-GPU format: a one-process run continues from it.
        var single = Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, s_short),
            new TrainOptions { WorkDir = a.Path, Resume = "", Console = _ => { } });
        Assert.Equal(6, single.Done);
        Assert.Equal([1, 2, 3, 4, 5, 6], single.Log.Select(r => r.Iter)); // 1-3 read back from the two-rank run's log
    }

    [Fact]
    public void ARankThatFails_StopsTheRunWithItsMessage()
    {
        using var a = new TempDir();
        var e = Assert.Throws<RankFailedException>(() => Train(a.Path, stage: 0, progress: (rank, done, _) =>
        {
            if (rank == 1 && done == 2) throw new IOException("disk on node 2 is full");
        }));
        Assert.Equal("rank 1 failed: disk on node 2 is full", e.Message);
    }

    [Fact]
    public void Shards_AreMmengineDefaultSampler()
    {
        int[] order = [5, 3, 0, 6, 1, 4, 2];
        // 7 rows over 3 ranks: padded to 9 by repeating the start, rank r takes r, r+3, r+6.
        Assert.Equal([5, 6, 2], DataShard.ForRank(order, 0, 3));
        Assert.Equal([3, 1, 5], DataShard.ForRank(order, 1, 3));
        Assert.Equal([0, 4, 3], DataShard.ForRank(order, 2, 3));
        Assert.Equal(order, DataShard.ForRank(order, 0, 1));
        Assert.Equal(3, DataShard.RowsPerRank(7, 3));
    }
}
