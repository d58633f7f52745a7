using System.Diagnostics;
using Xunit.Abstractions;

namespace IlgpuTune.Fuzz;

/// <summary>
/// CI's bounded fuzz run: each target for a few seconds from its committed seeds (fixed seed, input cap), in a child
/// process so that a stack overflow or a hang fails the test instead of the test host. Fails on any exception type
/// outside the readers' contract, a process death, or an input running past the per-input time limit.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData("safetensors")]
    [InlineData("torch")]
    [InlineData("tokenizer-json")]
    [InlineData("tokenizer-config")]
    [InlineData("sentencepiece")]
    [InlineData("config-json")]
    [InlineData("yaml-config")]
    [InlineData("dataset-json")]
    [InlineData("parquet")]
    [InlineData("bnb-quant-state")]
    [InlineData("jinja")]
    public void ShortRun_NothingUnexpected(string target)
    {
        using var crashes = new TempFolder();
        var (code, output) = Fuzzer("run", target, "--seconds", "5", "--inputs", "4000", "--seed", "1", "--time-limit-ms", "5000", "--crash-dir", crashes.Path);
        Assert.True(code == 0, $"fuzz target {target} found unexpected failures (inputs under {crashes.Path} are deleted; rerun with `run {target}` to keep them):\n{output}");
    }

    /// <summary>Every input the fuzzers saved (corpus/crash) is now accepted or clearly rejected.</summary>
    [Fact]
    public void SavedFindings_AreClearRejectionsNow()
    {
        foreach (var t in Targets.All)
        {
            string dir = Seeds.CrashDir(t.Name);
            if (!Directory.Exists(dir)) continue;
            var (code, output) = Fuzzer("repro", t.Name, dir);
            Assert.True(code == 0, output);
        }
    }

    [Fact]
    public void EveryTargetHasSeeds() =>
        Assert.All(Targets.All, t => Assert.NotEmpty(Seeds.Load(Seeds.CorpusDir(t.Name))));

    (int Code, string Output) Fuzzer(params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add(typeof(Program).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2))) p.Kill(entireProcessTree: true);
        p.WaitForExit();
        string output = stdout + stderr.Result;
        log.WriteLine(output);
        return (p.ExitCode, output);
    }

    sealed class TempFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("ilgpu-tune-fuzz-test-").FullName;
        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
