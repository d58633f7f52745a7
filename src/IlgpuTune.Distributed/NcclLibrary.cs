// Finding libnccl.so.2 for NcclNative's "nccl" imports, in the order a user expects: NCCL_LIBRARY (the file, or a folder
// holding it), each folder of LD_LIBRARY_PATH, the system's library path (ld.so.cache: a libnccl2 package), then the
// nvidia/nccl/lib folder of a Python nvidia-nccl-cu12 / nvidia-nccl-cu13 wheel (what `pip install torch` brings) in the
// active virtualenv / conda env, the user's site-packages and the system's. Nothing is loaded until a multi-GPU run asks.
using System.Reflection;
using System.Runtime.InteropServices;

namespace IlgpuTune.Distributed;

/// <summary>NCCL is not installed, or not where NCCL_LIBRARY says: the message says how to install it (the CLI prints it as is, exit 2).</summary>
public sealed class NcclNotFoundException(string message) : InvalidOperationException(message);

public static class NcclLibrary
{
    public const string FileName = "libnccl.so.2";
    public const string PathVariable = "NCCL_LIBRARY";

    private static readonly Lock s_gate = new();
    private static nint s_handle;
    private static string? s_loadedFrom;

    /// <summary>Where the loaded library came from (null until a multi-GPU run loads it).</summary>
    public static string? LoadedFrom => s_loadedFrom;

    /// <summary>
    /// The places to try, in order: full paths, or the bare file name for the system's search (ld.so.cache and the default
    /// folders). <paramref name="env"/> reads environment variables, <paramref name="directories"/> lists sub-folders of a folder
    /// (for the python3.X of site-packages) — both passed in so the search is testable without touching the machine.
    /// </summary>
    public static IReadOnlyList<string> Candidates(Func<string, string?> env, Func<string, IEnumerable<string>> directories)
    {
        var list = new List<string>();
        if (env(PathVariable) is { Length: > 0 } explicitPath)
            list.Add(explicitPath.EndsWith(".so", StringComparison.Ordinal) || explicitPath.Contains(".so.", StringComparison.Ordinal)
                ? explicitPath : Path.Combine(explicitPath, FileName));
        foreach (var dir in (env("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            list.Add(Path.Combine(dir, FileName));
        list.Add(FileName);
        foreach (var prefix in PythonPrefixes(env))
        {
            string lib = Path.Combine(prefix, "lib");
            foreach (var python in directories(lib).Where(d => Path.GetFileName(d).StartsWith("python3", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
                foreach (var packages in new[] { "site-packages", "dist-packages" })
                    list.Add(Path.Combine(python, packages, "nvidia", "nccl", "lib", FileName));
        }
        list.Add(Path.Combine("/usr/lib/python3/dist-packages", "nvidia", "nccl", "lib", FileName));
        return list.Distinct().ToList();
    }

    private static IEnumerable<string> PythonPrefixes(Func<string, string?> env)
    {
        if (env("VIRTUAL_ENV") is { Length: > 0 } venv) yield return venv;
        if (env("CONDA_PREFIX") is { Length: > 0 } conda) yield return conda;
        // The Python that PATH finds (a virtualenv or conda env used without activating it): the folder above its bin/.
        foreach (var dir in (env("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            if (Path.GetFileName(dir.TrimEnd('/')) == "bin" && Path.GetDirectoryName(dir.TrimEnd('/')) is { Length: > 0 } prefix
                && prefix is not "/usr" and not "/usr/local" and not "/")
                yield return prefix;
        if (env("HOME") is { Length: > 0 } home) yield return Path.Combine(home, ".local");
        yield return "/usr/local";
        yield return "/usr";
    }

    /// <summary>The one-line message when no candidate loads: what was tried and how to install NCCL.</summary>
    public static string NotFoundMessage(IReadOnlyList<string> tried, string? explicitPath) =>
        (explicitPath is { Length: > 0 } ? $"{PathVariable}={explicitPath}: no loadable {FileName} there. " : $"NCCL ({FileName}) was not found. ") +
        "Training on several GPUs needs NVIDIA's NCCL (one GPU does not): install it with `pip install nvidia-nccl-cu12` " +
        "(nvidia-nccl-cu13 for CUDA 13) or your distribution's libnccl2 package, or point NCCL_LIBRARY at libnccl.so.2. " +
        $"Looked in: {string.Join(", ", tried.Take(6))}{(tried.Count > 6 ? $" and {tried.Count - 6} more" : "")}";

    /// <summary>Loads NCCL for NcclNative (once); throws NcclNotFoundException with install instructions when it is missing.</summary>
    public static void EnsureLoaded()
    {
        lock (s_gate)
        {
            if (s_handle != 0) return;
            var tried = Candidates(Environment.GetEnvironmentVariable, ListDirectories);
            string? explicitPath = Environment.GetEnvironmentVariable(PathVariable);
            // An explicit NCCL_LIBRARY is the user's choice: it loads or the run stops, no silent fallback to another copy.
            foreach (var candidate in explicitPath is { Length: > 0 } ? tried.Take(1) : tried)
            {
                if (candidate.Contains('/') && !File.Exists(candidate)) continue;
                if (NativeLibrary.TryLoad(candidate, out var handle))
                {
                    s_handle = handle;
                    s_loadedFrom = candidate;
                    NativeLibrary.SetDllImportResolver(typeof(NcclLibrary).Assembly, Resolve);
                    return;
                }
            }
            throw new NcclNotFoundException(NotFoundMessage(explicitPath is { Length: > 0 } ? [.. tried.Take(1)] : tried, explicitPath));
        }
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == NcclNative.Library ? s_handle : 0;

    private static IEnumerable<string> ListDirectories(string dir)
    {
        try
        {
            return Directory.Exists(dir) ? Directory.GetDirectories(dir) : [];
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return [];
        }
    }
}
