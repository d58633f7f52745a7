using System.Diagnostics;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>A DPO / ORPO run killed with SIGKILL resumes exactly: same losses, lrs, grad norms and rewards/* values.</summary>
public class PreferenceResumeTests
{
    [Theory]
    [InlineData("tiny_llama_lora_color_dpo")]
    [InlineData("tiny_llama_lora_color_orpo")]
    public void Resume_AfterKill9_ReproducesTheUninterruptedCurve(string config)
    {
        using var b = new TempDir();
        using var a = new TempDir();
        string[] options = ["max_iters=400", "save_steps=4", "logging_steps=1", "device=cpu"];
        string cli = Path.Combine(AppContext.BaseDirectory, "ilgpu-tune.dll");
        var psi = new ProcessStartInfo("bash");
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"exec dotnet {cli} train {config} --work-dir {b.Path} --cfg-options {string.Join(' ', options)} > {b.Path}.out 2>&1");
        try
        {
            using (var p = Process.Start(psi)!)
            {
                var deadline = DateTime.UtcNow.AddMinutes(3);
                while (!Directory.Exists(Path.Combine(b.Path, "iter_8")) && DateTime.UtcNow < deadline && !p.HasExited) Thread.Sleep(20);
                Assert.False(p.HasExited, "trainer exited early: " + File.ReadAllText(b.Path + ".out"));
                p.Kill(entireProcessTree: true); // SIGKILL: no cleanup runs
                p.WaitForExit();
            }
            var resumed = Trainer.Run(Builtins.LoadConfig(config, options), new TrainOptions { WorkDir = b.Path, Resume = "", StopAfter = 4, Console = _ => { } });
            var reference = Trainer.Run(Builtins.LoadConfig(config, options),
                new TrainOptions { WorkDir = a.Path, StopAfter = resumed.Log[^1].Iter, Console = _ => { } });
            var want = reference.Log.Where(r => r.Iter > resumed.Log[^1].Iter - 4).ToList();
            var got = resumed.Log.Where(r => r.Iter > resumed.Log[^1].Iter - 4).ToList();
            Assert.Equal(4, got.Count);
            string Show(IEnumerable<LogRecord> log) => string.Join("\n", log.Select(r =>
                $"{r.Iter}: loss {r.Loss:R} lr {r.Lr:R} norm {r.GradNorm:R} " + string.Join(" ", r.Metrics!.Select(kv => $"{kv.Key} {kv.Value:R}"))));
            Assert.Equal(Show(want), Show(got));
        }
        finally
        {
            File.Delete(b.Path + ".out");
        }
    }
}
