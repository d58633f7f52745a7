using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>What a run writes and what it refuses: per-launch log folders, non-finite steps skipped and never saved,
/// divergence stopped, checkpoint cleanup limited to the run's own.</summary>
public class RunSafetyTests
{
    private static readonly string[] s_short = ["max_iters=12", "save_steps=4", "logging_steps=1", "evaluation_freq=1000", "device=cpu"];

    private static TrainConfig Config(params string[] extra) => Builtins.LoadConfig(Builtins.DefaultConfig, [.. s_short, .. extra]);

    private static void AssertFinite(string checkpoint)
    {
        foreach (var file in new[] { "trainable.safetensors", "optimizer.safetensors" })
        {
            using var f = SafetensorsFile.Open(Path.Combine(checkpoint, file));
            foreach (var t in f.Tensors) Assert.All(f.ReadFloat32(t.Name), v => Assert.True(float.IsFinite(v), $"{checkpoint}/{file}: {t.Name}"));
        }
    }

    [Fact]
    public void EachLaunch_WritesItsOwnLogFolder_AndAResumedCurveContinuesTheOldOne()
    {
        using var work = new TempDir();
        var lines = new List<string>();
        var first = Trainer.Run(Config("dtype=bfloat16"), new TrainOptions { WorkDir = work.Path, StopAfter = 6, Console = lines.Add, ConfigOverrides = ["max_iters=12"] });
        // The managed CPU has no bf16 matmuls: the log says so instead of silently computing in fp32.
        Assert.Contains(lines, l => l.Contains("WARNING - dtype bfloat16: Cpu has no bfloat16 matmuls; this run computes in float32", StringComparison.Ordinal));
        string run1 = first.RunDir;
        Assert.Matches(@"^\d{8}_\d{6}(_\d+)?$", Path.GetFileName(run1));
        Assert.True(File.Exists(Path.Combine(run1, Path.GetFileName(run1) + ".log")));
        Assert.Equal(6, File.ReadAllLines(Path.Combine(run1, "vis_data", "scalars.json")).Length);
        string config = File.ReadAllText(Path.Combine(run1, Builtins.DefaultConfig + ".yaml"));
        Assert.Contains("# --cfg-options max_iters=12", config);
        Assert.Contains("pretrained_model_name_or_path", config);
        string log1 = File.ReadAllText(Path.Combine(run1, Path.GetFileName(run1) + ".log"));

        var resumed = Trainer.Run(Config("dtype=bfloat16"), new TrainOptions { WorkDir = work.Path, Resume = "", Console = _ => { } });
        Assert.NotEqual(run1, resumed.RunDir);
        Assert.Equal(log1, File.ReadAllText(Path.Combine(run1, Path.GetFileName(run1) + ".log"))); // never truncated
        // The resumed launch logs iterations 5..12; its curve (and Log) holds 1..4 from the first launch.
        Assert.Equal(8, File.ReadAllLines(Path.Combine(resumed.RunDir, "vis_data", "scalars.json")).Length);
        Assert.Equal(Enumerable.Range(1, 12), resumed.Log.Select(r => r.Iter));
        Assert.Equal(first.Log.Take(4).Select(r => r.Loss), resumed.Log.Take(4).Select(r => r.Loss));
        Assert.True(File.Exists(Path.Combine(resumed.RunDir, "curve.svg")));
        Assert.Equal(new[] { first.RunDir, resumed.RunDir }.Select(Path.GetFileName),
            Checkpoint.ReadState(Checkpoint.Resolve(work.Path, null)).LogDirs!);
    }

    [Fact]
    public void SaveTotalLimit_DeletesOnlyThisRunsCheckpoints()
    {
        using var work = new TempDir();
        Trainer.Run(Config("save_total_limit=-1"), new TrainOptions { WorkDir = work.Path, StopAfter = 8, Console = _ => { } });
        // Another run's checkpoint in the same folder (same files, another run id).
        string other = Path.Combine(work.Path, "iter_100");
        Directory.CreateDirectory(other);
        foreach (var f in Directory.GetFiles(Checkpoint.DirFor(work.Path, 4))) File.Copy(f, Path.Combine(other, Path.GetFileName(f)));
        var state = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(other, "state.json")))!;
        state["run_id"] = "another-run";
        File.WriteAllText(Path.Combine(other, "state.json"), state.ToJsonString());

        Trainer.Run(Config("save_total_limit=1"), new TrainOptions { WorkDir = work.Path, Resume = Checkpoint.DirFor(work.Path, 8), Console = _ => { } });
        Assert.Equal([12, 100], Checkpoint.List(work.Path).Select(c => c.Iter));
        Assert.Equal("iter_12", File.ReadAllText(Path.Combine(work.Path, Checkpoint.LastCheckpointFile)).Trim());
    }

    [Fact]
    public void NonFiniteSteps_AreSkippedAndLogged_TheRunStopsAfterMaxSkippedSteps_AndNoCheckpointHoldsNaN()
    {
        using var work = new TempDir();
        var lines = new List<string>();
        // lr 1e30 blows the weights up after the first update: from then on every loss is NaN.
        var e = Assert.Throws<TrainingStoppedException>(() => Trainer.Run(Config("lr=1e30", "save_steps=1", "max_skipped_steps=3", "warmup_ratio=0"),
            new TrainOptions { WorkDir = work.Path, Console = lines.Add }));
        Assert.Contains("3 updates in a row skipped for non-finite loss", e.Message);
        Assert.Contains("Last complete checkpoint", e.Message);
        Assert.Equal(3, lines.Count(l => l.Contains("update skipped", StringComparison.Ordinal)));
        var ckpts = Checkpoint.List(work.Path);
        Assert.NotEmpty(ckpts);
        foreach (var (dir, _) in ckpts) AssertFinite(dir);
        // The NaN iterations are logged as null in scalars.json (JSON has no NaN).
        string runDir = Directory.GetDirectories(work.Path, "20*").Single();
        Assert.Contains(File.ReadAllLines(Path.Combine(runDir, "vis_data", "scalars.json")), l => l.Contains("\"loss\":null", StringComparison.Ordinal));
    }

    [Fact]
    public void ADivergedRun_LossAtLnVocabWithZeroGradient_StopsAndSaysSo()
    {
        using var work = new TempDir();
        var e = Assert.Throws<TrainingStoppedException>(() => Trainer.Run(Config("lr=1e6", "max_iters=40", "save_steps=100", "max_skipped_steps=4", "warmup_ratio=0"),
            new TrainOptions { WorkDir = work.Path, Console = _ => { } }));
        Assert.Contains("the run diverged: gradient norm 0 for 4 optimizer steps", e.Message);
        Assert.Contains("ln(vocab_size", e.Message);
        Assert.Empty(Checkpoint.List(work.Path));
        Assert.False(Directory.Exists(Path.Combine(work.Path, "adapter")));
    }

    [Fact]
    public void AnEvaluationInputPastMaxPositionEmbeddings_IsRefusedBeforeTheWorkDirIsTouched()
    {
        using var work = new TempDir();
        string dir = Path.Combine(work.Path, "w");
        string longInput = string.Join(' ', Enumerable.Repeat("a very long description of a color", 80));
        var e = Assert.Throws<ConfigException>(() => Trainer.Run(Config($"evaluation_inputs=['{longInput}']"),
            new TrainOptions { WorkDir = dir, Console = _ => { } }));
        Assert.Contains("max_position_embeddings (256 tokens)", e.Message);
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void ACheckpointWithNaNWeights_IsNotWritten()
    {
        using var work = new TempDir();
        using var device = Device.Create("cpu");
        using var good = Tensor.FromArray(device, [1f, 2f], 2);
        good.Name = "w";
        var state = new CheckpointState(1, 1, 0, [], "cfg", "model", null, null, "run");
        Checkpoint.Save(work.Path, state, [good], [], 2);
        using var bad = Tensor.FromArray(device, [1f, float.NaN], 2);
        bad.Name = "w";
        var e = Assert.Throws<TrainingStoppedException>(() => Checkpoint.Save(work.Path, state with { Iter = 2 }, [bad], [], 2));
        Assert.Contains("NaN/Inf", e.Message);
        Assert.Equal([1], Checkpoint.List(work.Path).Select(c => c.Iter));
        Assert.Equal("iter_1", File.ReadAllText(Path.Combine(work.Path, Checkpoint.LastCheckpointFile)).Trim());
        Assert.Single(Directory.GetFileSystemEntries(work.Path, "iter_*"));
    }
}
