using System.Diagnostics;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>A resumed run continues exactly: same losses, lrs and grad norms as the uninterrupted run.</summary>
public class ResumeTests
{
    private static readonly string[] s_short = ["max_iters=12", "save_steps=4", "logging_steps=1", "evaluation_freq=1000", "accumulative_counts=2", "device=cpu"];

    private static TrainResult Train(string workDir, string? resume = null, int? stopAfter = null) =>
        Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, s_short), new TrainOptions
        {
            WorkDir = workDir, Resume = resume, StopAfter = stopAfter, Console = _ => { },
        });

    private static void AssertSameCurve(IReadOnlyList<LogRecord> expected, IReadOnlyList<LogRecord> actual)
    {
        string Show(IReadOnlyList<LogRecord> log) => string.Join("\n", log.Select(r => $"{r.Iter}: loss {r.Loss:R} lr {r.Lr:R} norm {r.GradNorm:R}"));
        bool same = expected.Count == actual.Count && expected.Zip(actual).All(p =>
            p.First.Iter == p.Second.Iter && p.First.Loss == p.Second.Loss && p.First.Lr == p.Second.Lr && p.First.GradNorm == p.Second.GradNorm);
        Assert.True(same, $"curves differ\nexpected:\n{Show(expected)}\nactual:\n{Show(actual)}");
    }

    [Fact]
    public void Resume_AfterStop_ReproducesTheUninterruptedCurve()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        var full = Train(a.Path);
        Assert.Equal(12, full.Log.Count);
        Assert.True(full.Log[^1].Loss < full.Log[0].Loss, "loss should fall");

        Train(b.Path, stopAfter: 6);                // checkpoint at 4, stops at 6 without saving
        Assert.Equal(["iter_4"], Checkpoint.List(b.Path).Select(c => Path.GetFileName(c.Dir)));
        var resumed = Train(b.Path, resume: "");    // latest
        AssertSameCurve(full.Log, resumed.Log);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.Path, "adapter", "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(b.Path, "adapter", "adapter_model.safetensors")));
        // save_total_limit 2 keeps the newest two.
        Assert.Equal(["iter_8", "iter_12"], Checkpoint.List(b.Path).Select(c => Path.GetFileName(c.Dir)));
    }

    [Fact]
    public void Resume_AfterKill9_ReproducesTheUninterruptedCurve()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        var full = Train(a.Path);

        string cli = Path.Combine(AppContext.BaseDirectory, "ilgpu-tune.dll");
        // Output goes to a file: an undrained pipe would block the child once its buffer fills. `exec` makes the kill hit dotnet.
        var psi = new ProcessStartInfo("bash");
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"exec dotnet {cli} train {Builtins.DefaultConfig} --work-dir {b.Path} --cfg-options {string.Join(' ', s_short)} max_iters=400 > {b.Path}.out 2>&1");
        using (var p = Process.Start(psi)!)
        {
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (!Directory.Exists(Path.Combine(b.Path, "iter_8")) && DateTime.UtcNow < deadline && !p.HasExited) Thread.Sleep(20);
            Assert.False(p.HasExited, "trainer exited early: " + File.ReadAllText(b.Path + ".out"));
            p.Kill(entireProcessTree: true); // SIGKILL: no cleanup runs
            p.WaitForExit();
        }
        // The killed run used max_iters 400 (a different LR schedule), so resume the same config it ran.
        var resumed = Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, [.. s_short, "max_iters=400"]),
            new TrainOptions { WorkDir = b.Path, Resume = "", StopAfter = 4, Console = _ => { } });
        var reference = Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, [.. s_short, "max_iters=400"]),
            new TrainOptions { WorkDir = a.Path + "-ref", StopAfter = resumed.Log[^1].Iter, Console = _ => { } });
        try
        {
            AssertSameCurve(reference.Log, resumed.Log);
        }
        finally
        {
            Directory.Delete(a.Path + "-ref", recursive: true);
            File.Delete(b.Path + ".out");
        }
        Assert.NotEmpty(full.Log);
    }
}
