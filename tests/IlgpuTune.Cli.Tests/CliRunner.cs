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
        var r = Run(args, stdin: null, TimeSpan.FromMinutes(5));
        log.WriteLine($"exit {r.Code}\nstdout: {r.Stdout}\nstderr: {r.Stderr}");
        return (r.Code, r.Stdout, r.Stderr);
    }

    public sealed record Result(int Code, string Stdout, string Stderr, TimeSpan Elapsed, bool TimedOut);

    /// <summary>One run with <paramref name="stdin"/> as its input (null: closed at once), killed after <paramref name="timeout"/>.</summary>
    public static Result Run(IEnumerable<string> args, string? stdin, TimeSpan timeout, IDictionary<string, string>? environment = null)
    {
        string dll = typeof(ChatCommands).Assembly.Location;
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            if (stdin is not null) p.StandardInput.Write(stdin);
            p.StandardInput.Close();
        }
        catch (IOException)
        {
            // It exited before reading its input.
        }
        bool timedOut = !p.WaitForExit(timeout);
        if (timedOut) p.Kill(entireProcessTree: true);
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result, sw.Elapsed, timedOut);
    }
}
