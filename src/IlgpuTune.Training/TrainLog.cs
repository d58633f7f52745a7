// Training logs as mmengine prints them, a scalars JSONL, and a loss / lr / grad-norm curve (SVG) in the work dir.
using System.Globalization;
using System.Text;
using System.Text.Json;
using IlgpuTune.Numerics;

namespace IlgpuTune.Training;

public sealed record LogRecord(int Iter, int MaxIters, double Lr, double Loss, double? GradNorm, double Time, double DataTime,
    double MemoryMiB, double TokensPerSecond, TimeSpan Eta);

public sealed class TrainLog : IDisposable
{
    private readonly StreamWriter _text;
    private readonly StreamWriter _scalars;
    private readonly Action<string> _console;
    private readonly List<LogRecord> _records = [];

    /// <param name="resumedAt">When resuming, the checkpoint's iteration: earlier scalars are kept, later ones (from the
    /// interrupted run) are dropped, so the resumed curve continues the old one exactly.</param>
    public TrainLog(string workDir, Action<string> console, int? resumedAt)
    {
        Directory.CreateDirectory(workDir);
        WorkDir = workDir;
        _console = console;
        _text = new StreamWriter(Path.Combine(workDir, "train.log"), append: resumedAt is not null) { AutoFlush = true };
        string scalarsPath = Path.Combine(workDir, "scalars.jsonl");
        if (resumedAt is { } at && File.Exists(scalarsPath))
        {
            _records.AddRange(File.ReadAllLines(scalarsPath).Where(l => l.Length > 0).Select(FromJson).Where(r => r.Iter <= at));
            AtomicFile.WriteAllText(scalarsPath, string.Concat(File.ReadAllLines(scalarsPath)
                .Where(l => l.Length > 0 && FromJson(l).Iter <= at).Select(l => l + "\n")));
        }
        _scalars = new StreamWriter(scalarsPath, append: resumedAt is not null) { AutoFlush = true };
    }

    public string WorkDir { get; }

    public IReadOnlyList<LogRecord> Records => _records;

    public void Info(string message)
    {
        string line = $"{DateTime.Now:yyyy/MM/dd HH:mm:ss} - ilgpu-tune - INFO - {message}";
        _text.WriteLine(line);
        _console(line);
    }

    /// <summary>`Iter(train) [ 10/720]  lr: …  eta: …  time: …  data_time: …  memory: …  loss: …  grad_norm: …  tokens/s: …`.</summary>
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
        Info(sb.ToString());
        _scalars.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["iter"] = r.Iter, ["lr"] = r.Lr, ["loss"] = r.Loss, ["grad_norm"] = r.GradNorm, ["time"] = r.Time,
            ["data_time"] = r.DataTime, ["memory"] = r.MemoryMiB, ["tokens_per_s"] = r.TokensPerSecond,
        }));
    }

    private static LogRecord FromJson(string line)
    {
        using var doc = JsonDocument.Parse(line);
        var o = doc.RootElement;
        double D(string k) => o.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : 0;
        double? N(string k) => o.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
        return new LogRecord((int)D("iter"), 0, D("lr"), D("loss"), N("grad_norm"), D("time"), D("data_time"), D("memory"),
            D("tokens_per_s"), TimeSpan.Zero);
    }

    private static string FormatEta(TimeSpan t) => $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}";

    /// <summary>Writes curve.svg: loss, lr and grad norm against iteration.</summary>
    public void WriteCurve()
    {
        if (_records.Count == 0) return;
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
        AtomicFile.WriteAllText(Path.Combine(WorkDir, "curve.svg"), svg.ToString());
    }

    public void Dispose()
    {
        _text.Dispose();
        _scalars.Dispose();
    }
}
