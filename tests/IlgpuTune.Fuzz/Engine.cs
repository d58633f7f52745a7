using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;

namespace IlgpuTune.Fuzz;

/// <summary>Where seeds and findings live: tests/IlgpuTune.Fuzz/corpus/TARGET (committed seeds) and corpus/crash/TARGET.</summary>
public static class Seeds
{
    public static string RepoRoot { get; } = FindRoot();

    public static string CorpusDir(string target) => Path.Combine(RepoRoot, "tests", "IlgpuTune.Fuzz", "corpus", target);
    public static string CrashDir(string target) => Path.Combine(RepoRoot, "tests", "IlgpuTune.Fuzz", "corpus", "crash", target);
    public static string RegressionDir(string target) => Path.Combine(RepoRoot, "tests", "IlgpuTune.Fuzz", "corpus", "regressions", target);

    public static List<byte[]> Load(string dir) =>
        Directory.Exists(dir) ? [.. Directory.GetFiles(dir).Where(f => !f.EndsWith(".txt", StringComparison.Ordinal)).Order(StringComparer.Ordinal).Select(File.ReadAllBytes)] : [];

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "IlgpuTune.sln"))) return dir.FullName;
        throw new InvalidOperationException($"IlgpuTune.sln not found above {AppContext.BaseDirectory}");
    }
}

/// <summary>Counts of one run (one worker process, or summed by the supervisor).</summary>
public sealed record Stats
{
    public long Tried { get; set; }
    public long Accepted { get; set; }
    public long Rejected { get; set; }
    /// <summary>Clear rejections whose message does not name the file the user gave (a quality signal, not a failure).</summary>
    public long RejectedWithoutFileName { get; set; }
    public long Unexpected { get; set; }
    public long Hangs { get; set; }
    public long Deaths { get; set; }
    public int CorpusSize { get; set; }
    public int Edges { get; set; }
    public List<string> Findings { get; set; } = [];

    public void Add(Stats o)
    {
        Tried += o.Tried;
        Accepted += o.Accepted;
        Rejected += o.Rejected;
        RejectedWithoutFileName += o.RejectedWithoutFileName;
        Unexpected += o.Unexpected;
        Hangs += o.Hangs;
        Deaths += o.Deaths;
        CorpusSize = Math.Max(CorpusSize, o.CorpusSize);
        Edges = Math.Max(Edges, o.Edges);
        foreach (var f in o.Findings) if (!Findings.Contains(f)) Findings.Add(f);
    }

    public bool Clean => Unexpected == 0 && Hangs == 0 && Deaths == 0;
}

/// <summary>
/// AFL-style edge coverage from the SharpFuzz-instrumented reader assemblies: a 64 KiB map of hit counts per edge, kept
/// as log2 buckets; an input that sets a new bucket bit is added to the corpus.
/// </summary>
public sealed unsafe class Coverage : IDisposable
{
    const int MapSize = 1 << 16;
    readonly byte* _map = (byte*)NativeMemory.AllocZeroed(MapSize);
    readonly byte[] _seen = new byte[MapSize];

    public Coverage()
    {
        SharpFuzz.Common.Trace.SharedMem = _map;
        SharpFuzz.Common.Trace.PrevLocation = 0;
    }

    /// <summary>True when the reader assemblies in this process carry the instrumentation (see the csproj's InstrumentReaders).</summary>
    public static bool Instrumented =>
        typeof(IlgpuTune.Data.Datasets.DatasetReader).Assembly.GetReferencedAssemblies().Any(a => a.Name == "SharpFuzz.Common");

    public int Edges { get; private set; }

    public void Reset()
    {
        new Span<byte>(_map, MapSize).Clear();
        SharpFuzz.Common.Trace.PrevLocation = 0;
    }

    /// <summary>Folds the last run's hits into what has been seen; true when something new was hit.</summary>
    public bool Update()
    {
        bool fresh = false;
        var words = new ReadOnlySpan<ulong>(_map, MapSize / 8);
        for (int w = 0; w < words.Length; w++)
        {
            if (words[w] == 0) continue;
            for (int i = w * 8; i < w * 8 + 8; i++)
            {
                byte v = _map[i];
                if (v == 0) continue;
                byte bucket = v switch { 1 => 1, 2 => 2, 3 => 4, <= 7 => 8, <= 15 => 16, <= 31 => 32, <= 127 => 64, _ => 128 };
                if ((_seen[i] & bucket) == 0)
                {
                    if (_seen[i] == 0) Edges++;
                    _seen[i] |= bucket;
                    fresh = true;
                }
            }
        }
        Reset();
        return fresh;
    }

    public void Dispose() => NativeMemory.Free(_map);
}

/// <summary>One worker: runs a target on mutated inputs in this process until its budget is spent.</summary>
public sealed class Worker(Target target, WorkerOptions o)
{
    public const int ExitHang = 3;

    readonly Stats _stats = new();
    readonly HashSet<string> _kinds = [];
    long _startedTicks; // of the input now running; 0 when none (read by the watchdog thread)
    byte[] _current = [];

    public int Run()
    {
        using var coverage = new Coverage();
        bool guided = Coverage.Instrumented;
        string work = Path.Combine(o.WorkDir, target.Name);
        Directory.CreateDirectory(work);
        Directory.CreateDirectory(o.CrashDir);
        var rng = new Random(o.Seed);
        var mutator = new Mutator(target.Kind, target.Tokens);
        var corpus = Seeds.Load(Seeds.CorpusDir(target.Name));
        if (corpus.Count == 0) corpus.Add([]);
        using var inflight = new FileStream(o.InflightFile, FileMode.Create, FileAccess.Write, FileShare.ReadWrite);
        var watchdog = new Thread(() => Watch(work)) { IsBackground = true };
        watchdog.Start();
        var sw = Stopwatch.StartNew();
        var lastStats = sw.Elapsed;

        // The seeds first (they set the coverage baseline), then mutants of the corpus.
        var queue = new Queue<byte[]>(corpus);
        while (_stats.Tried < o.MaxInputs && sw.Elapsed < o.Duration)
        {
            byte[] input = queue.Count > 0 ? queue.Dequeue() : mutator.Mutate(corpus[rng.Next(corpus.Count)], corpus, rng);
            inflight.Position = 0;
            inflight.Write(input);
            inflight.SetLength(input.Length);
            inflight.Flush(flushToDisk: false);
            Execute(input, work);
            if (guided && coverage.Update() && input.Length <= 1 << 20 && corpus.Count < 10_000) corpus.Add(input);
            if (sw.Elapsed - lastStats > TimeSpan.FromSeconds(1))
            {
                lastStats = sw.Elapsed;
                WriteStats(corpus.Count, coverage.Edges);
                if (o.Parent != 0 && !SupervisorAlive()) break;
            }
        }
        WriteStats(corpus.Count, coverage.Edges);
        return _stats.Unexpected == 0 ? 0 : 1;
    }

    bool SupervisorAlive()
    {
        try
        {
            using var p = Process.GetProcessById(o.Parent);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    void Execute(byte[] input, string work)
    {
        _current = input;
        Volatile.Write(ref _startedTicks, Stopwatch.GetTimestamp());
        try
        {
            target.Run(input, work);
            _stats.Accepted++;
        }
        catch (Exception e) when (Target.IsClearRejection(e))
        {
            _stats.Rejected++;
            if (target.Name != "jinja" && !e.Message.Contains(work, StringComparison.Ordinal) && !NamesAFile(e.Message)) _stats.RejectedWithoutFileName++;
        }
        catch (Exception e)
        {
            _stats.Unexpected++;
            string kind = Kind(e);
            if (_kinds.Add(kind))
            {
                string saved = Save(input, e.GetType().Name, e.ToString());
                string line = $"{target.Name}: {e.GetType().FullName}: {FirstLine(e.Message)} [{kind}] -> {saved}";
                _stats.Findings.Add(line);
                Console.WriteLine("UNEXPECTED " + line);
            }
        }
        finally
        {
            Volatile.Write(ref _startedTicks, 0);
            _stats.Tried++;
        }
    }

    // Messages name the file by its name ("config.json: ...") or its path.
    static bool NamesAFile(string message) =>
        message.Contains(".json", StringComparison.Ordinal) || message.Contains(".safetensors", StringComparison.Ordinal)
        || message.Contains(".bin", StringComparison.Ordinal) || message.Contains(".model", StringComparison.Ordinal)
        || message.Contains(".yaml", StringComparison.Ordinal) || message.Contains(".parquet", StringComparison.Ordinal);

    // An unexpected failure's identity: its type and the innermost frame in our code.
    static string Kind(Exception e)
    {
        var frame = new StackTrace(e).GetFrames().Select(f => f.GetMethod()).FirstOrDefault(m => m?.DeclaringType?.Namespace?.StartsWith("IlgpuTune", StringComparison.Ordinal) == true);
        return $"{e.GetType().Name} at {frame?.DeclaringType?.Name}.{frame?.Name}";
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    string Save(byte[] input, string what, string details)
    {
        string name = $"{what}-{Convert.ToHexString(SHA256.HashData(input))[..12].ToLowerInvariant()}";
        string path = Path.Combine(o.CrashDir, name + ".bin");
        File.WriteAllBytes(path, input);
        File.WriteAllText(Path.Combine(o.CrashDir, name + ".txt"), $"target: {target.Name}\n{details}\n");
        return path;
    }

    // A per-input time limit: an input still running past it is saved and the worker exits (a thread cannot be stopped).
    void Watch(string work)
    {
        while (true)
        {
            Thread.Sleep(20);
            long started = Volatile.Read(ref _startedTicks);
            if (started == 0 || Stopwatch.GetElapsedTime(started) < o.TimeLimit) continue;
            string saved = Save(_current, "timeout", $"still running after {o.TimeLimit.TotalSeconds} s");
            string line = $"{target.Name}: timeout: still running after {o.TimeLimit.TotalSeconds} s -> {saved}";
            _stats.Hangs++;
            _stats.Findings.Add(line);
            Console.WriteLine("HANG " + line);
            WriteStats(0, 0);
            Console.Out.Flush();
            Environment.Exit(ExitHang);
        }
    }

    void WriteStats(int corpusSize, int edges)
    {
        lock (_stats)
        {
            if (corpusSize > 0) _stats.CorpusSize = corpusSize;
            if (edges > 0) _stats.Edges = edges;
            File.WriteAllText(o.StatsFile, JsonSerializer.Serialize(_stats));
        }
    }
}

/// <param name="Parent">the supervisor's process id: the worker stops when it is gone (0: none)</param>
public sealed record WorkerOptions(TimeSpan Duration, long MaxInputs, int Seed, TimeSpan TimeLimit, string CrashDir, string WorkDir,
    string StatsFile, string InflightFile, int Parent);
