using System.Diagnostics;
using System.Text;
using IlgpuTune.Cli;
using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>Runs the real `ilgpu-tune` in a child process (stdin closed) and returns its exit code and output.</summary>
internal static class CliRunner
{
    public static (int Code, string Stdout, string Stderr) Run(ITestOutputHelper log, params string[] args)
    {
        string dll = typeof(ChatCommands).Assembly.Location;
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            StandardOutputEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        log.WriteLine($"exit {p.ExitCode}\nstdout: {stdout}\nstderr: {stderr.Result}");
        return (p.ExitCode, stdout, stderr.Result);
    }
}
