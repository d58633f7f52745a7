// Where a training step's time goes, kernel by kernel, without a GPU profiler (the GPU machine has no nsys): while a
// profile is attached to a KernelRegistry, every launcher's kernel lookup first waits for the device. The wait is the
// device time of the kernel launched before it (the device was idle when that one was launched); the time from the end
// of the previous wait to this lookup is host time: that launch, the op glue, tape and allocator work around it. Both
// go to the previous kernel's name. Waiting after every launch serialises host and device, so the total is an upper
// bound of an unprofiled step; host time that an unprofiled run hides under device work shows as host time here.
using System.Diagnostics;
using System.Text;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public sealed class KernelProfile
{
    private readonly Dictionary<string, Row> _rows = new();
    private string? _last;
    private long _lastEnd;

    private sealed class Row
    {
        public long Calls;
        public long HostTicks;
        public long DeviceTicks;
    }

    /// <summary>Called by the registry before each launch of kernel <paramref name="name"/>.</summary>
    internal void Mark(string name, Accelerator accelerator)
    {
        long t0 = Stopwatch.GetTimestamp();
        accelerator.Synchronize();
        long t1 = Stopwatch.GetTimestamp();
        if (_last is not null)
        {
            if (!_rows.TryGetValue(_last, out var row)) _rows[_last] = row = new Row();
            row.Calls++;
            row.HostTicks += t0 - _lastEnd;
            row.DeviceTicks += t1 - t0;
        }
        _last = name;
        _lastEnd = t1;
    }

    /// <summary>Attributes the time since the last launch to it (call once the profiled work is done).</summary>
    public void Flush(Accelerator accelerator)
    {
        Mark("(idle)", accelerator);
        _last = null;
    }

    /// <summary>Launches timed so far of the kernels whose name starts with <paramref name="prefix"/> (the last one after Flush).</summary>
    public long Launches(string prefix) => _rows.Where(p => p.Key.StartsWith(prefix, StringComparison.Ordinal)).Sum(p => p.Value.Calls);

    /// <summary>A table of the <paramref name="top"/> kernels by host + device time, per step of <paramref name="steps"/>.</summary>
    public string Report(int steps, int top = 40)
    {
        steps = Math.Max(steps, 1);
        double ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency / steps;
        long host = _rows.Values.Sum(r => r.HostTicks), dev = _rows.Values.Sum(r => r.DeviceTicks);
        long calls = _rows.Values.Sum(r => r.Calls);
        var sb = new StringBuilder();
        sb.AppendLine($"profile per step ({steps} steps): {calls / steps} launches, host {ms(host):F1} ms, device {ms(dev):F1} ms");
        sb.AppendLine($"{"kernel",-44} {"calls",7} {"host ms",9} {"device ms",10} {"us/call",8}");
        foreach (var (name, r) in _rows.OrderByDescending(p => p.Value.HostTicks + p.Value.DeviceTicks).Take(top))
            sb.AppendLine($"{name,-44} {r.Calls / steps,7} {ms(r.HostTicks),9:F2} {ms(r.DeviceTicks),10:F2} " +
                $"{(r.HostTicks + r.DeviceTicks) * 1e6 / Stopwatch.Frequency / Math.Max(r.Calls, 1),8:F1}");
        return sb.ToString();
    }
}
