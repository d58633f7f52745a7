using System.Diagnostics;

namespace IlgpuTune.Kernels.Tests;

// Every generated source in the tree matches its generator in tools/ (run with --check: it compares, writes nothing).
// XtunerTemplates.g.cs is the exception: its generator reads XTuner's own templates.py, which is not in this repository.
public class GeneratedCodeTests
{
    [Theory]
    [InlineData("tools/gen_gemm.py")]
    [InlineData("tools/gen_flash.py")]
    [InlineData("tools/gen_flash_wgmma.py")]
    [InlineData("tools/tokenizers/gen_nfc_tables.py")]
    public async Task GeneratedFileMatchesItsGenerator(string generator)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "IlgpuTune.sln"))) dir = dir.Parent;
        Assert.NotNull(dir);
        var start = new ProcessStartInfo("python3") { WorkingDirectory = dir.FullName, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(generator);
        start.ArgumentList.Add("--check");
        using var python = Process.Start(start)!;
        var stderr = python.StandardError.ReadToEndAsync();
        string stdout = await python.StandardOutput.ReadToEndAsync();
        await python.WaitForExitAsync();
        Assert.True(python.ExitCode == 0, $"python3 {generator} --check exited {python.ExitCode}: {stdout}{await stderr}");
    }
}
