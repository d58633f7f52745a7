using System.Diagnostics;
using IlgpuTune.Data.Datasets;

namespace IlgpuTune.Data;

/// <summary>
/// The progress line of a dataset being prepared (train, check-dataset, log-dataset): samples encoded, samples/s, share of
/// the files' bytes read and the time left. On a terminal one line is redrawn in place twice a second; otherwise (a log
/// file, a pipe) a line is written every 10 s. Nothing is written in the first second, so a small dataset (or a cache hit)
/// prints nothing.
/// </summary>
public sealed class PrepareProgress : IDisposable
{
    readonly TextWriter _out;
    readonly bool _inPlace;
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly Timer _timer;
    readonly Lock _lock = new();
    long _samples, _totalBytes;
    ReadCounter? _bytes;
    string _phase = "encoding";
    bool _shown, _disposed;

    /// <param name="output">where lines go (stderr).</param>
    /// <param name="inPlace">redraw one line with \r (a terminal) instead of writing a line each time.</param>
    /// <param name="every">time between lines; null = 0.5 s in place, else 10 s.</param>
    public PrepareProgress(TextWriter output, bool inPlace, TimeSpan? every = null)
    {
        _out = output;
        _inPlace = inPlace;
        var period = every ?? TimeSpan.FromSeconds(inPlace ? 0.5 : 10);
        _timer = new Timer(_ => Tick(), null, period > TimeSpan.FromSeconds(1) ? period : TimeSpan.FromSeconds(1), period);
    }

    /// <summary>Progress on stderr, redrawn in place when stderr is a terminal.</summary>
    public static PrepareProgress ToStderr() => new(Console.Error, !Console.IsErrorRedirected);

    /// <summary>The files being read (their total size) and the counter their readers advance.</summary>
    public void Reading(ReadCounter bytes, long totalBytes) => (_bytes, _totalBytes) = (bytes, totalBytes);

    public void AddSamples(int n) => Interlocked.Add(ref _samples, n);

    /// <summary>What is done after the encoding (packing, writing the cache), shown instead of the read share.</summary>
    public void Phase(string what)
    {
        lock (_lock) _phase = what;
    }

    /// <summary>The current line, e.g. "dataset: 51,200 samples encoded, 1,842 samples/s, 25.3% of 581 MB read, ETA 1:24".</summary>
    public string Line()
    {
        double seconds = _clock.Elapsed.TotalSeconds;
        long samples = Interlocked.Read(ref _samples);
        string line = $"dataset: {samples:N0} samples encoded, {samples / Math.Max(seconds, 1e-9):N0} samples/s";
        if (_phase != "encoding") return $"{line}, {_phase} ({Clock(seconds)} elapsed)";
        if (_bytes is null || _totalBytes <= 0) return $"{line} ({Clock(seconds)} elapsed)";
        double share = Math.Clamp((double)_bytes.Bytes / _totalBytes, 0, 1);
        string eta = share > 0.001 ? Clock(seconds * (1 - share) / share) : "?";
        return $"{line}, {100 * share:F1}% of {_totalBytes / 1e6:N0} MB read, ETA {eta}";
    }

    static string Clock(double s)
    {
        var t = TimeSpan.FromSeconds(Math.Round(s));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t:mm\\:ss}" : $"{t:m\\:ss}";
    }

    /// <summary>Writes the line now (the timer calls this).</summary>
    public void Tick()
    {
        lock (_lock)
        {
            if (_disposed) return;
            string line = Line();
            if (_inPlace) _out.Write($"\r{line}\u001b[K");
            else _out.WriteLine(line);
            _out.Flush();
            _shown = true;
        }
    }

    /// <summary>Stops the line; once a line was shown, a last one says how long the whole preparation took.</summary>
    public void Dispose()
    {
        _timer.Dispose();
        lock (_lock)
        {
            if (_disposed) return;
            if (_shown)
            {
                double seconds = _clock.Elapsed.TotalSeconds;
                long samples = Interlocked.Read(ref _samples);
                _out.WriteLine($"{(_inPlace ? "\r" : "")}dataset: {samples:N0} samples prepared in {Clock(seconds)} " +
                    $"({samples / Math.Max(seconds, 1e-9):N0} samples/s){(_inPlace ? "\u001b[K" : "")}");
                _out.Flush();
            }
            _disposed = true;
        }
    }
}
