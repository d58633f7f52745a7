using System.Diagnostics;
using IlgpuTune.Cli;
using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.IO;
using IlgpuTune.TestKit;
using IlgpuTune.Training;
using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>
/// `train` as a process: Ctrl-C / SIGTERM stop it with a resumable checkpoint and exit 130 / 143, a second Ctrl-C ends
/// it at once with the last checkpoint valid, one run owns a work dir, a failed launch keeps the earlier logs. Each run is
/// the built-in tiny config for a few dozen iterations.
/// </summary>
public class RunLifecycleTests(ITestOutputHelper log)
{
    private static readonly string[] s_cfg = ["max_iters=3000", "save_steps=1000", "logging_steps=1", "evaluation_freq=100000", "device=cpu"];

    /// <summary>Starts `ilgpu-tune train` in the background, its output to a file; SIGINT is restored to its default
    /// (perl) because a shell running a command in the background starts it with SIGINT ignored.</summary>
    private sealed class Background : IDisposable
    {
        private readonly Process _process;
        public readonly string Output;

        public Background(string workDir, params string[] extra)
        {
            Output = workDir + ".out";
            var psi = new ProcessStartInfo("perl") { RedirectStandardOutput = false };
            psi.ArgumentList.Add("-e");
            psi.ArgumentList.Add("$SIG{INT} = 'DEFAULT'; open(STDOUT, '>', shift) or die; open(STDERR, '>&STDOUT'); exec(@ARGV) or die");
            psi.ArgumentList.Add(Output);
            psi.ArgumentList.Add(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet");
            psi.ArgumentList.Add(typeof(ChatCommands).Assembly.Location);
            foreach (var a in (string[])["train", Builtins.DefaultConfig, "--work-dir", workDir, .. extra]) psi.ArgumentList.Add(a);
            _process = Process.Start(psi)!;
        }

        public int Pid => _process.Id;
        public string Text => File.Exists(Output) ? File.ReadAllText(Output) : "";

        public void WaitFor(Func<string, bool> condition)
        {
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!condition(Text))
            {
                Assert.False(_process.HasExited, "train exited early:\n" + Text);
                Assert.True(DateTime.UtcNow < deadline, "timed out; output:\n" + Text);
                Thread.Sleep(20);
            }
        }

        public void Signal(string name) => Process.Start("kill", ["-" + name, Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();

        public int WaitForExit()
        {
            Assert.True(_process.WaitForExit(TimeSpan.FromMinutes(2)), "train did not stop:\n" + Text);
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited) _process.Kill();
            _process.Dispose();
            File.Delete(Output);
        }
    }

    private static bool IterationsLogged(string text, int n) => text.Contains($"Iter(train) [{n.ToString(System.Globalization.CultureInfo.InvariantCulture).PadLeft(4)}/3000]", StringComparison.Ordinal);

    // A checkpoint that loads: state, weights, optimizer, all finite.
    private static void AssertValidCheckpoint(string dir)
    {
        var state = Checkpoint.ReadState(dir);
        Assert.True(state.Iter > 0);
        using var weights = SafetensorsFile.Open(Path.Combine(dir, "trainable.safetensors"));
        foreach (var t in weights.Tensors) Assert.All(weights.ReadFloat32(t.Name), v => Assert.True(float.IsFinite(v)));
        Assert.NotEmpty(Checkpoint.ReadOptimizer(dir));
    }

    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    public void Signal_StopsAfterTheStep_SavesAResumableCheckpoint_AndExits128PlusSignal(string signal, int expectedCode)
    {
        using var work = new TempDir();
        string dir = Path.Combine(work.Path, "w");
        int stoppedAt;
        using (var run = new Background(dir, ["--cfg-options", .. s_cfg]))
        {
            run.WaitFor(t => IterationsLogged(t, 5));
            run.Signal(signal);
            Assert.Equal(expectedCode, run.WaitForExit());
            log.WriteLine(run.Text);
            Assert.Contains("resume with: ilgpu-tune train", run.Text);
            var ckpts = Checkpoint.List(dir);
            stoppedAt = Assert.Single(ckpts).Iter;
            Assert.True(stoppedAt >= 5);
            Assert.Equal(ckpts[0].Dir, Checkpoint.Resolve(dir, null));
            AssertValidCheckpoint(ckpts[0].Dir);
        }
        // Resumed in-process for a few iterations, it continues exactly as an uninterrupted run of the same config.
        var cfg = Builtins.LoadConfig(Builtins.DefaultConfig, s_cfg);
        var resumed = Trainer.Run(cfg, new TrainOptions { WorkDir = dir, Resume = "", StopAfter = 3, Console = _ => { } });
        var reference = Trainer.Run(cfg, new TrainOptions { WorkDir = Path.Combine(work.Path, "ref"), StopAfter = stoppedAt + 3, Console = _ => { } });
        Assert.Equal(reference.Log.Select(r => (r.Iter, r.Loss, r.GradNorm)), resumed.Log.Select(r => (r.Iter, r.Loss, r.GradNorm)));
    }

    [Fact]
    public void SecondCtrlC_StopsAtOnce_AndTheLastCompleteCheckpointStaysValid()
    {
        using var work = new TempDir();
        string dir = Path.Combine(work.Path, "w");
        using var run = new Background(dir, ["--cfg-options", .. s_cfg, "save_steps=3"]);
        run.WaitFor(t => t.Contains("saved checkpoint", StringComparison.Ordinal) && IterationsLogged(t, 7));
        run.Signal("INT");
        run.Signal("INT");
        Assert.Equal(130, run.WaitForExit());
        string last = Checkpoint.Resolve(dir, null);
        Assert.Equal(Path.GetFileName(last), File.ReadAllText(Path.Combine(dir, Checkpoint.LastCheckpointFile)).Trim());
        AssertValidCheckpoint(last);
    }

    [Fact]
    public void ALockedWorkDir_IsRefusedNamingTheHolder_AndAnotherRunsCheckpointsNeedResumeOrOverwrite()
    {
        using var work = new TempDir();
        string dir = Path.Combine(work.Path, "w");
        using (var run = new Background(dir, ["--cfg-options", .. s_cfg]))
        {
            run.WaitFor(t => IterationsLogged(t, 2));
            var (code, _, stderr) = CliRunner.Run(log, ["train", Builtins.DefaultConfig, "--work-dir", dir, "--cfg-options", .. s_cfg]);
            Assert.Equal(2, code);
            Assert.Contains($"in use by another train run (PID {run.Pid})", stderr);
            run.Signal("TERM");
            Assert.Equal(143, run.WaitForExit());
        }
        var before = Directory.GetDirectories(dir).Order().ToList();
        var (refused, _, error) = CliRunner.Run(log, ["train", Builtins.DefaultConfig, "--work-dir", dir, "--cfg-options", "max_iters=4", "device=cpu"]);
        Assert.Equal(2, refused);
        Assert.Contains("holds checkpoints of another run", error);
        Assert.Contains("--resume", error);
        Assert.Contains("--overwrite", error);
        Assert.Equal(before, Directory.GetDirectories(dir).Order().ToList());

        var (ok, stdout, _) = CliRunner.Run(log, ["train", Builtins.DefaultConfig, "--work-dir", dir, "--overwrite", "--cfg-options", "max_iters=4", "device=cpu"]);
        Assert.Equal(0, ok);
        Assert.Equal([4], Checkpoint.List(dir).Select(c => c.Iter));
        Assert.Equal(2, Directory.GetDirectories(dir, "20*").Length); // both launches' log folders
        // The run ends with what to do next, with real paths.
        Assert.Contains($"ilgpu-tune chat ", stdout);
        Assert.Contains($"--adapter {Path.Combine(dir, "adapter")}", stdout);
        Assert.Contains($"ilgpu-tune convert merge ", stdout);
    }

    [Fact]
    public void AFailedLaunch_KeepsTheEarlierLogs()
    {
        using var work = new TempDir();
        string dir = Path.Combine(work.Path, "w");
        var (ok, _, _) = CliRunner.Run(log, ["train", Builtins.DefaultConfig, "--work-dir", dir, "--cfg-options", "max_iters=3", "logging_steps=1", "device=cpu"]);
        Assert.Equal(0, ok);
        string runDir = Assert.Single(Directory.GetDirectories(dir, "20*"));
        string logFile = Path.Combine(runDir, Path.GetFileName(runDir) + ".log");
        string scalars = Path.Combine(runDir, "vis_data", "scalars.json");
        Assert.Equal(3, File.ReadAllLines(scalars).Length);
        var files = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Order().ToList();
        var bytes = files.Select(File.ReadAllBytes).ToList();

        string empty = Path.Combine(work.Path, "empty.jsonl");
        File.WriteAllText(empty, "");
        foreach (var (bad, expected) in new[] { ("pretrained_model_name_or_path=/nonexistent/model", "/nonexistent/model"),
            ("data_path=/nonexistent/data.jsonl", "/nonexistent/data.jsonl"), ($"data_path={empty}", empty) })
        {
            var (code, _, stderr) = CliRunner.Run(log, ["train", Builtins.DefaultConfig, "--work-dir", dir, "--resume", "--cfg-options", "max_iters=6", "device=cpu", bad]);
            Assert.Equal(2, code);
            Assert.Contains(expected, stderr);
        }
        Assert.Equal(files, Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Order().ToList());
        Assert.Equal(bytes, files.Select(File.ReadAllBytes).ToList());
        Assert.True(File.Exists(logFile));
    }

    [Fact]
    public void Convert_RemovesAKilledWritersTempFolders_AndAFailureLeavesNoOutput()
    {
        using var work = new TempDir();
        string dir = Path.Combine(work.Path, "w");
        Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, ["max_iters=2", "device=cpu", "evaluation_freq=1000"]),
            new TrainOptions { WorkDir = dir, Console = _ => { } });
        string output = Path.Combine(work.Path, "adapter-out");
        // What a kill -9 during a convert leaves: a temp folder of a dead PID, and a replaced output moved aside.
        int dead = DeadPid();
        string leftover = $"{output}.tmp-{dead}-{Guid.NewGuid():N}";
        Directory.CreateDirectory(leftover);
        File.WriteAllText(Path.Combine(leftover, "adapter_model.safetensors"), "partial");
        string other = Path.Combine(work.Path, "merged");
        string aside = $"{other}.old-{dead}-{Guid.NewGuid():N}";
        Directory.CreateDirectory(aside);

        var (code, _, _) = CliRunner.Run(log, "convert", "adapter", Checkpoint.List(dir)[^1].Dir, output);
        Assert.Equal(0, code);
        Assert.False(Directory.Exists(leftover));
        Assert.False(Directory.Exists(aside));
        Assert.True(Directory.Exists(other)); // the output the killed swap had moved aside is back
        Assert.True(File.Exists(Path.Combine(output, "adapter_config.json")));

        // A failing conversion leaves neither an output nor a temp folder.
        var (failed, _, _) = CliRunner.Run(log, "convert", "adapter", Path.Combine(dir, "cache"), Path.Combine(work.Path, "never"));
        Assert.NotEqual(0, failed);
        Assert.Empty(Directory.GetDirectories(work.Path, "never*"));
    }

    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    public void Convert_Interrupted_LeavesNoPartialOutput(string signal, int expectedCode)
    {
        using var work = new TempDir();
        // A base whose tokenizer.json is a FIFO: the merge blocks copying it, its temp folder half written.
        string baseDir = Path.Combine(work.Path, "base");
        Directory.CreateDirectory(baseDir);
        foreach (var f in new[] { "config.json", "model.safetensors", "generation_config.json" })
            File.Copy(Path.Combine(Repo.Fixture("tiny/llama"), f), Path.Combine(baseDir, f));
        Process.Start("mkfifo", [Path.Combine(baseDir, "tokenizer.json")])!.WaitForExit();
        string output = Path.Combine(work.Path, "merged");
        var psi = new ProcessStartInfo("perl");
        foreach (var a in (string[])["-e", "$SIG{INT} = 'DEFAULT'; exec(@ARGV) or die", Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet",
            typeof(ChatCommands).Assembly.Location, "convert", "merge", baseDir, Path.Combine(Repo.Fixture("tiny/llama"), "adapter"), output]) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        try
        {
            Interrupt(p, work.Path, signal, expectedCode);
        }
        finally
        {
            if (!p.HasExited) p.Kill(); // a failed check must not leave it blocked on the FIFO
        }
        Assert.Empty(Directory.GetDirectories(work.Path, "merged*"));
    }

    private static void Interrupt(Process p, string folder, string signal, int expectedCode)
    {
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (Directory.GetDirectories(folder, "merged.tmp-*").Length == 0)
        {
            Assert.False(p.HasExited, "convert exited early");
            Assert.True(DateTime.UtcNow < deadline, "no temp folder appeared");
            Thread.Sleep(20);
        }
        Thread.Sleep(200); // let the writer reach the FIFO
        Process.Start("kill", ["-" + signal, p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), "convert did not stop");
        Assert.Equal(expectedCode, p.ExitCode);
    }

    [Fact]
    public void AtomicDirectory_RemoveOwn_DeletesThisProcessesTempFolderDuringTheFill()
    {
        using var work = new TempDir();
        string output = Path.Combine(work.Path, "out");
        var e = Assert.ThrowsAny<IOException>(() => AtomicDirectory.Write(output, tmp =>
        {
            File.WriteAllText(Path.Combine(tmp, "a"), "1");
            AtomicDirectory.RemoveOwn(output); // what Ctrl-C does while a conversion writes
            File.WriteAllText(Path.Combine(tmp, "b"), "2");
        }));
        log.WriteLine(e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(work.Path));
    }

    private static int DeadPid()
    {
        using var p = Process.Start("true")!;
        p.WaitForExit();
        return p.Id;
    }
}
