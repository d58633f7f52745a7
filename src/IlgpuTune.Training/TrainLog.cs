// Training logs as mmengine writes them, one folder per launch (work_dir/YYYYmmdd_HHMMSS/: the text log, vis_data/scalars.json
// with one JSON object per logged iteration, the config) and a loss / lr / grad-norm curve (SVG) there; never truncated.
using System.Globalization;
using System.Text;
using System.Text.Json;
using IlgpuTune.Numerics;

namespace IlgpuTune.Training;

public sealed record LogRecord(int Iter, int MaxIters, double Lr, double Loss, double? GradNorm, double Time, double DataTime,
    double MemoryMiB, double TokensPerSecond, TimeSpan Eta, IReadOnlyDictionary<string, double>? Metrics = null);

public sealed class TrainLog : IDisposable
{
    public const string ScalarsFile = "scalars.json";
    private readonly Action<string> _console;
    private readonly List<LogRecord> _records = [];
    // Lines logged while the run is still being validated: nothing is written into the work dir until it all checks out.
    private readonly List<string> _pending = [];
    private StreamWriter? _text;
    private StreamWriter? _scalars;

    public TrainLog(Action<string> console) => _console = console;

    /// <summary>This launch's folder, work_dir/YYYYmmdd_HHMMSS (null until <see cref="Open"/>).</summary>
    public string? RunDir { get; private set; }

    public IReadOnlyList<LogRecord> Records => _records;

    /// <summary>
    /// Starts writing: creates a new folder of this launch under <paramref name="workDir"/> as mmengine does
    /// ({stamp}/{stamp}.log, {stamp}/vis_data/scalars.json); earlier launches' folders are never touched. A resumed run
    /// passes the scalars its checkpoint's run inherited (<paramref name="earlier"/>), so its curve continues the old one.
    /// </summary>
    public string Open(string workDir, DateTime now, IEnumerable<LogRecord> earlier)
    {
        string stamp = now.ToString("yyyyMMdd_HHmmss", CultureInfo.InvariantCulture);
        string dir = Path.Combine(workDir, stamp);
        for (int n = 1; Directory.Exists(dir); n++) dir = Path.Combine(workDir, $"{stamp}_{n}"); // two launches in one second
        Directory.CreateDirectory(Path.Combine(dir, "vis_data"));
        RunDir = dir;
        _text = new StreamWriter(Path.Combine(dir, Path.GetFileName(dir) + ".log")) { AutoFlush = true };
        foreach (var line in _pending) _text.WriteLine(line);
        _pending.Clear();
        _scalars = new StreamWriter(Path.Combine(dir, "vis_data", ScalarsFile)) { AutoFlush = true };
        _records.AddRange(earlier);
        return dir;
    }

    /// <summary>The records of iterations up to <paramref name="at"/> from earlier launches' folders (later launches win).</summary>
    public static List<LogRecord> ReadEarlier(IEnumerable<string> runDirs, int at)
    {
        var byIter = new SortedDictionary<int, LogRecord>();
        foreach (var dir in runDirs)
        {
            string path = Path.Combine(dir, "vis_data", ScalarsFile);
            if (!File.Exists(path)) continue;
            foreach (var line in File.ReadAllLines(path).Where(l => l.Length > 0))
                if (FromJson(line) is { } r && r.Iter <= at) byIter[r.Iter] = r;
        }
        return [.. byIter.Values];
    }

    public void Info(string message) => Write("INFO", message);

    public void Warning(string message) => Write("WARNING", message);

    private void Write(string level, string message)
    {
        string line = $"{DateTime.Now:yyyy/MM/dd HH:mm:ss} - ilgpu-tune - {level} - {message}";
        if (_text is null) _pending.Add(line);
        else _text.WriteLine(line);
        _console(line);
    }

    /// <summary>`Iter(train) [ 10/720]  lr: …  eta: …  time: …  data_time: …  memory: …  loss: …  grad_norm: …  tokens/s: …`
    /// (memory: peak device memory in MiB, as mmengine).</summary>
    public void Iteration(LogRecord r)
    {
        _records.Add(r);
        int width = r.MaxIters.ToString(CultureInfo.InvariantCulture).Length;
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"Iter(train) [{r.Iter.ToString(CultureInfo.InvariantCulture).PadLeft(width)}/{r.MaxIters}]  ");
        sb.Append(CultureInfo.InvariantCulture, $"lr: {r.Lr:0.0000e+00}  eta: {FormatEta(r.Eta)}  time: {r.Time:F4}  data_time: {r.DataTime:F4}  ");
        sb.Append(CultureInfo.InvariantCulture, $"memory: {r.MemoryMiB:F0}  loss: {r.Loss:F4}  ");
        if (r.GradNorm is { } g) sb.Append(CultureInfo.InvariantCulture, $"grad_norm: {g:F4}  ");
        sb.Append(CultureInfo.InvariantCulture, $"tokens/s: {r.TokensPerSecond:F1}");
        // Preference runs: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/* (as TRL logs them).
        foreach (var (k, v) in r.Metrics ?? new Dictionary<string, double>()) sb.Append(CultureInfo.InvariantCulture, $"  {k}: {v:F4}");
        Info(sb.ToString());
        // JSON has no NaN / Infinity: a non-finite value is written as null.
        static double? F(double? v) => v is { } x && double.IsFinite(x) ? x : null;
        var scalars = new Dictionary<string, object?>
        {
            ["lr"] = F(r.Lr), ["data_time"] = F(r.DataTime), ["loss"] = F(r.Loss), ["grad_norm"] = F(r.GradNorm), ["time"] = F(r.Time),
            ["memory"] = F(r.MemoryMiB), ["tokens_per_s"] = F(r.TokensPerSecond), ["iter"] = r.Iter, ["step"] = r.Iter,
        };
        foreach (var (k, v) in r.Metrics ?? new Dictionary<string, double>()) scalars[k] = F(v);
        _scalars?.WriteLine(JsonSerializer.Serialize(scalars, TrainingJson.Default.DictionaryStringObject));
    }

    private static LogRecord? FromJson(string line)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException)
        {
            return null; // a line cut by a kill
        }
        using var _ = doc;
        var o = doc.RootElement;
        double D(string k) => o.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : 0;
        double? N(string k) => o.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
        return new LogRecord((int)D("iter"), 0, D("lr"), N("loss") ?? double.NaN, N("grad_norm"), D("time"), D("data_time"), D("memory"),
            D("tokens_per_s"), TimeSpan.Zero);
    }

    private static string FormatEta(TimeSpan t) => $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}";

    /// <summary>Writes the run folder's curve.svg: loss, lr and grad norm against iteration.</summary>
    public void WriteCurve()
    {
        if (_records.Count == 0 || RunDir is null) return;
        var panels = new (string Title, Func<LogRecord, double?> Value, string Color)[]
        {
            ("loss", r => r.Loss, "#1f77b4"), ("lr", r => r.Lr, "#2ca02c"), ("grad_norm", r => r.GradNorm, "#d62728"),
        };
        const int w = 420, h = 260, pad = 48;
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w * panels.Length}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n");
        svg.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        for (int p = 0; p < panels.Length; p++)
        {
            var (title, value, color) = panels[p];
            var pts = _records.Where(r => value(r) is { } v && double.IsFinite(v)).Select(r => (X: (double)r.Iter, Y: value(r)!.Value)).ToList();
            int x0 = p * w;
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + w / 2}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\">{title}</text>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"<rect x=\"{x0 + pad}\" y=\"{24}\" width=\"{w - pad - 12}\" height=\"{h - 24 - pad}\" fill=\"none\" stroke=\"#999\"/>\n");
            if (pts.Count == 0) continue;
            double xmin = pts.Min(q => q.X), xmax = Math.Max(pts.Max(q => q.X), xmin + 1);
            double ymin = pts.Min(q => q.Y), ymax = pts.Max(q => q.Y);
            if (ymax - ymin < 1e-12) { ymin -= 0.5 * Math.Abs(ymin) + 1e-9; ymax += 0.5 * Math.Abs(ymax) + 1e-9; }
            double Sx(double x) => x0 + pad + (x - xmin) / (xmax - xmin) * (w - pad - 12);
            double Sy(double y) => 24 + (h - 24 - pad) * (1 - (y - ymin) / (ymax - ymin));
            svg.Append("<polyline fill=\"none\" stroke=\"").Append(color).Append("\" stroke-width=\"1.5\" points=\"");
            foreach (var (x, y) in pts) svg.Append(CultureInfo.InvariantCulture, $"{Sx(x):F1},{Sy(y):F1} ");
            svg.Append("\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + pad - 4}\" y=\"{Sy(ymax) + 4:F0}\" text-anchor=\"end\">{ymax:G3}</text>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + pad - 4}\" y=\"{Sy(ymin):F0}\" text-anchor=\"end\">{ymin:G3}</text>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + pad}\" y=\"{h - pad + 14}\">{xmin:G6}</text>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x0 + w - 12}\" y=\"{h - pad + 14}\" text-anchor=\"end\">iter {xmax:G6}</text>\n");
        }
        svg.Append("</svg>\n");
        AtomicFile.WriteAllText(Path.Combine(RunDir, "curve.svg"), svg.ToString());
    }

    public void Dispose()
    {
        _text?.Dispose();
        _scalars?.Dispose();
    }
}
