using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace IlgpuTune.Fuzz;

/// <summary>
/// dotnet tests/IlgpuTune.Fuzz/bin/Release/net10.0/IlgpuTune.Fuzz.dll
///   list                                   the targets
///   run TARGET[,TARGET…]|all [--minutes M | --seconds S] [--inputs N] [--seed N] [--jobs J] [--time-limit-ms MS] [--crash-dir DIR]
///   repro TARGET FILE|DIR…                  run saved inputs once each, print what happened
///   instrument DIR                          (the build does this) add SharpFuzz edge counters to DIR's reader assemblies
/// `run` supervises one worker process per target and restarts it after a hang or a crash (a stack overflow cannot be
/// caught in-process), saving the input that caused it under corpus/crash/TARGET. Exit 0 when nothing unexpected happened.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0) return Usage();
        try
        {
            return args[0] switch
            {
                "instrument" when args.Length == 2 => Instrumenter.Run(args[1]),
                "list" => List(),
                "run" when args.Length >= 2 => Supervise(args[1], Options(args[2..])),
                "worker" when args.Length >= 2 => RunWorker(args[1], Options(args[2..])),
                "repro" when args.Length >= 3 => Repro(Targets.Get(args[1]), args[2..]),
                "write-parquet-seeds" when args.Length == 2 => ParquetSeeds.Write(args[1]),
                _ => Usage(),
            };
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    static int Usage()
    {
        Console.Error.WriteLine("usage: IlgpuTune.Fuzz list | run TARGET[,TARGET...]|all [--minutes M | --seconds S] [--inputs N] [--seed N] [--jobs J] " +
            "[--time-limit-ms MS] [--crash-dir DIR] | repro TARGET FILE|DIR...");
        return 2;
    }

    static int List()
    {
        foreach (var t in Targets.All) Console.WriteLine($"{t.Name,-18} {t.Description}");
        return 0;
    }

    static Dictionary<string, string> Options(string[] args)
    {
        var o = new Dictionary<string, string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 == args.Length) throw new UsageException($"unexpected '{args[i]}'");
            o[args[i][2..]] = args[++i];
        }
        return o;
    }

    static double Num(Dictionary<string, string> o, string key, double fallback) =>
        o.TryGetValue(key, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;

    static TimeSpan Duration(Dictionary<string, string> o) =>
        o.ContainsKey("minutes") ? TimeSpan.FromMinutes(Num(o, "minutes", 1)) : TimeSpan.FromSeconds(Num(o, "seconds", 60));

    static int RunWorker(string name, Dictionary<string, string> o)
    {
        var w = new WorkerOptions(Duration(o), (long)Num(o, "inputs", long.MaxValue), (int)Num(o, "seed", 1),
            TimeSpan.FromMilliseconds(Num(o, "time-limit-ms", 10_000)), o["crash-dir"], o["work"], o["stats"], o["inflight"], (int)Num(o, "parent", 0));
        return new Worker(Targets.Get(name), w).Run();
    }

    static int Supervise(string which, Dictionary<string, string> o)
    {
        var targets = which == "all" ? Targets.All.ToList() : which.Split(',').Select(Targets.Get).ToList();
        var results = new Dictionary<string, (Stats Stats, TimeSpan Elapsed)>();
        Parallel.ForEach(targets, new ParallelOptions { MaxDegreeOfParallelism = (int)Num(o, "jobs", 1) }, t =>
        {
            var r = SuperviseOne(t, o);
            lock (results) results[t.Name] = r;
        });
        Console.WriteLine();
        Console.WriteLine($"{"target",-18} {"seconds",7} {"tried",9} {"accepted",9} {"rejected",9} {"(unnamed)",9} {"unexpected",10} {"hangs",5} {"deaths",6} {"corpus",6} {"edges",6}");
        foreach (var t in targets)
        {
            var (s, e) = results[t.Name];
            Console.WriteLine($"{t.Name,-18} {e.TotalSeconds,7:F0} {s.Tried,9} {s.Accepted,9} {s.Rejected,9} {s.RejectedWithoutFileName,9} {s.Unexpected,10} {s.Hangs,5} {s.Deaths,6} {s.CorpusSize,6} {s.Edges,6}");
        }
        var findings = results.Values.SelectMany(r => r.Stats.Findings).ToList();
        if (findings.Count > 0)
        {
            Console.WriteLine("\nfindings (one input saved per kind):");
            foreach (var f in findings) Console.WriteLine("  " + f);
        }
        Console.WriteLine($"\ncoverage: {(results.Values.Any(r => r.Stats.Edges > 0) ? "SharpFuzz edge counters (instrumented readers)" : "none (uninstrumented build): mutation only")}");
        return results.Values.All(r => r.Stats.Clean) ? 0 : 1;
    }

    // Runs workers until the target's budget is spent, restarting after a hang or a process death.
    static (Stats, TimeSpan) SuperviseOne(Target t, Dictionary<string, string> o)
    {
        var total = new Stats();
        var sw = Stopwatch.StartNew();
        var budget = Duration(o);
        long inputs = (long)Num(o, "inputs", long.MaxValue);
        int seed = (int)Num(o, "seed", 1);
        string crashDir = o.TryGetValue("crash-dir", out var c) ? Path.Combine(c, t.Name) : Seeds.CrashDir(t.Name);
        string work = Path.Combine(Path.GetTempPath(), $"ilgpu-tune-fuzz-{Environment.ProcessId}-{t.Name}");
        Directory.CreateDirectory(work);
        try
        {
            for (int round = 0; sw.Elapsed < budget && total.Tried < inputs; round++)
            {
                string stats = Path.Combine(work, "stats.json"), inflight = Path.Combine(work, "inflight.bin");
                File.Delete(stats);
                var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardError = true };
                foreach (var a in new[]
                {
                    typeof(Program).Assembly.Location, "worker", t.Name, "--seconds", Math.Max(1, (budget - sw.Elapsed).TotalSeconds).ToString(CultureInfo.InvariantCulture),
                    "--inputs", (inputs - total.Tried).ToString(CultureInfo.InvariantCulture), "--seed", (seed + round).ToString(CultureInfo.InvariantCulture),
                    "--time-limit-ms", Num(o, "time-limit-ms", 10_000).ToString(CultureInfo.InvariantCulture), "--crash-dir", crashDir,
                    "--work", work, "--stats", stats, "--inflight", inflight, "--parent", Environment.ProcessId.ToString(CultureInfo.InvariantCulture),
                }) psi.ArgumentList.Add(a);
                using var p = Process.Start(psi)!;
                string stderr = p.StandardError.ReadToEnd();
                p.WaitForExit();
                var s = File.Exists(stats) ? JsonSerializer.Deserialize<Stats>(File.ReadAllText(stats))! : new Stats();
                if (p.ExitCode is not (0 or 1 or Worker.ExitHang))
                {
                    // Died (stack overflow, abort): the input in flight is the culprit.
                    byte[] input = File.Exists(inflight) ? File.ReadAllBytes(inflight) : [];
                    Directory.CreateDirectory(crashDir);
                    string name = $"died-{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(input))[..12].ToLowerInvariant()}";
                    File.WriteAllBytes(Path.Combine(crashDir, name + ".bin"), input);
                    string tail = stderr.Length > 4000 ? stderr[..4000] : stderr;
                    File.WriteAllText(Path.Combine(crashDir, name + ".txt"), $"target: {t.Name}\nprocess died with exit code {p.ExitCode}\n{tail}\n");
                    string line = $"{t.Name}: process died, exit {p.ExitCode} ({FirstLine(stderr)}) -> {Path.Combine(crashDir, name + ".bin")}";
                    Console.WriteLine("DIED " + line);
                    s.Deaths++;
                    s.Tried++;
                    s.Findings.Add(line);
                }
                else if (stderr.Length > 0) Console.Error.Write(stderr);
                total.Add(s);
                if (s.Tried == 0 && p.ExitCode is 0 or 1) break;
            }
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
        Console.WriteLine($"{t.Name}: {total.Tried} tried, {total.Accepted} accepted, {total.Rejected} clear rejections, {total.Unexpected} unexpected, " +
            $"{total.Hangs} hangs, {total.Deaths} deaths in {sw.Elapsed.TotalSeconds:F0} s");
        return (total, sw.Elapsed);
    }

    static string FirstLine(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault()?.Trim() ?? "";

    // Each saved input once, in this process: what a regression test checks. An input still running after 10 s (the
    // run's default per-input limit) ends the process with the worker's hang code.
    static int Repro(Target t, string[] paths)
    {
        using var coverage = new Coverage();
        string work = Path.Combine(Path.GetTempPath(), $"ilgpu-tune-fuzz-repro-{Environment.ProcessId}");
        Directory.CreateDirectory(work);
        int bad = 0;
        string? running = null;
        long started = 0;
        new Thread(() =>
        {
            while (true)
            {
                Thread.Sleep(50);
                long s = Volatile.Read(ref started);
                if (s == 0 || Stopwatch.GetElapsedTime(s) < TimeSpan.FromSeconds(10)) continue;
                Console.WriteLine($"{running}: HANG still running after 10 s");
                Console.Out.Flush();
                Environment.Exit(Worker.ExitHang);
            }
        }) { IsBackground = true }.Start();
        try
        {
            var files = paths.SelectMany(p => Directory.Exists(p)
                ? Directory.GetFiles(p).Where(f => !f.EndsWith(".txt", StringComparison.Ordinal)).Order(StringComparer.Ordinal)
                : (IEnumerable<string>)[p]);
            foreach (var f in files)
            {
                var sw = Stopwatch.StartNew();
                string outcome;
                running = f;
                Volatile.Write(ref started, Stopwatch.GetTimestamp());
                try
                {
                    t.Run(File.ReadAllBytes(f), work);
                    outcome = "accepted";
                }
                catch (Exception e) when (Target.IsClearRejection(e))
                {
                    outcome = $"rejected: {FirstLine(e.Message)}";
                }
                catch (Exception e)
                {
                    outcome = $"UNEXPECTED {e.GetType().FullName}: {FirstLine(e.Message)}";
                    bad++;
                }
                Volatile.Write(ref started, 0);
                Console.WriteLine($"{f}: {outcome} ({sw.Elapsed.TotalMilliseconds:F0} ms)");
            }
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
        return bad == 0 ? 0 : 1;
    }
}

sealed class UsageException(string message) : Exception(message);

/// <summary>The committed parquet seeds (corpus/parquet), written by Parquet.Net as users' pandas/HF files are.</summary>
static class ParquetSeeds
{
    public sealed class Turn
    {
        [System.Text.Json.Serialization.JsonPropertyName("input")] public string? Input { get; set; }
        [System.Text.Json.Serialization.JsonPropertyName("output")] public string? Output { get; set; }
    }

    public sealed class ConversationRow
    {
        [System.Text.Json.Serialization.JsonPropertyName("conversation")] public List<Turn>? Conversation { get; set; }
    }

    public sealed class AlpacaRow
    {
        [System.Text.Json.Serialization.JsonPropertyName("instruction")] public string? Instruction { get; set; }
        [System.Text.Json.Serialization.JsonPropertyName("input")] public string? Input { get; set; }
        [System.Text.Json.Serialization.JsonPropertyName("output")] public string? Output { get; set; }
    }

    public static int Write(string dir)
    {
        Directory.CreateDirectory(dir);
        Parquet.Serialization.ParquetSerializer.SerializeAsync(new[]
        {
            new ConversationRow { Conversation = [new Turn { Input = "i1", Output = "o1" }, new Turn { Input = "i2", Output = "o2" }] },
        }, Path.Combine(dir, "conversation.parquet")).GetAwaiter().GetResult();
        Parquet.Serialization.ParquetSerializer.SerializeAsync(new[]
        {
            new AlpacaRow { Instruction = "Give a color", Input = "sky", Output = "#87ceeb" },
            new AlpacaRow { Instruction = "x", Input = "", Output = "y" },
        }, Path.Combine(dir, "alpaca.parquet")).GetAwaiter().GetResult();
        return 0;
    }
}

/// <summary>Adds SharpFuzz's AFL edge counters to the reader assemblies next to this one (their copies here only).</summary>
static class Instrumenter
{
    // Only readers and parsers: IlgpuTune.Model's and Training's other types hold ILGPU kernels and the trainer.
    static readonly (string File, Func<string, bool> Types)[] Assemblies =
    [
        ("IlgpuTune.IO.dll", _ => true),
        ("IlgpuTune.Data.dll", _ => true),
        ("IlgpuTune.Model.dll", t => t.StartsWith("IlgpuTune.Model.ModelConfig", StringComparison.Ordinal) || t.StartsWith("IlgpuTune.Model.Generation.GenerationConfig", StringComparison.Ordinal)),
        ("IlgpuTune.Training.dll", t => t.StartsWith("IlgpuTune.Training.TrainConfig", StringComparison.Ordinal) || t.StartsWith("IlgpuTune.Training.Builtins", StringComparison.Ordinal)),
    ];

    public static int Run(string dir)
    {
        foreach (var (file, types) in Assemblies)
        {
            string path = Path.Combine(dir, file);
            try
            {
                int n = SharpFuzz.Fuzzer.Instrument(path, types, SharpFuzz.Options.Value).Count();
                Console.WriteLine($"instrumented {n} types of {file}");
            }
            catch (SharpFuzz.InstrumentationException e)
            {
                Console.WriteLine($"{file}: {e.Message}");
            }
        }
        return 0;
    }
}
