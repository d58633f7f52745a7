// torch.optim.AdamW over a list of fp32 parameters (formats.md §6.1; amsgrad off, one param group). Per parameter the
// state is exp_avg, exp_avg_sq (fp32, the parameter's shape) and step; a parameter without a gradient is skipped and its
// step not advanced, as torch does. The lr is read at every Step, so a schedule just sets Lr before it.
//
// State layout: all exp_avg in one flat fp32 buffer and all exp_avg_sq in another, each parameter at its offset
// (one allocation, one copy to export, and ready for launches over a flat layout). Where it lives:
//   managed CPU device: float[] on the heap, updated by the CPU reference;
//   accelerator:        device buffers, updated by the multi-tensor kernel (one launch per 8 tensors of equal step);
//   accelerator, paged: page-locked host memory (Accelerator.AllocatePageLocked1D). Before each chunk of parameters is
//                       updated its state is copied into a device staging buffer and copied back after, all in order on
//                       the default stream, so device memory holds at most one chunk of state. Simple, not overlapped.
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Core;
using IlgpuTune.Kernels;
using Device = IlgpuTune.Core.Device;
using AdamWKernels = IlgpuTune.Kernels.AdamW;

namespace IlgpuTune.Training;

public sealed class AdamW : IDisposable
{
    /// <summary>Upper bound on the state elements (per moment) staged on the device at once when the state is paged.</summary>
    public const long PagedChunkElements = 1L << 24;

    private readonly Tensor[] _params;
    private readonly long[] _offsets;
    private readonly long[] _steps;
    private readonly long _total;
    private readonly Device _device;

    private readonly float[]? _hostAvg, _hostAvgSq;
    private readonly MemoryBuffer1D<float, Stride1D.Dense>? _devAvg, _devAvgSq;
    private readonly PageLockedArray1D<float>? _pinnedAvg, _pinnedAvgSq;
    private readonly MemoryBuffer1D<float, Stride1D.Dense>? _stageAvg, _stageAvgSq;
    private bool _disposed;

    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 1e-2, bool pagedState = false)
    {
        if (!(lr >= 0)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "Invalid learning rate");
        if (!(eps >= 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "Invalid epsilon value");
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "Invalid beta parameter at index 0");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "Invalid beta parameter at index 1");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "Invalid weight_decay value");
        _params = parameters.ToArray();
        if (_params.Length == 0) throw new ArgumentException("optimizer got an empty parameter list", nameof(parameters));
        var names = new HashSet<string>();
        foreach (var p in _params)
        {
            if (p.Name is null) throw new ArgumentException($"every parameter needs a Name (it keys the optimizer state): {p}");
            if (!names.Add(p.Name)) throw new ArgumentException($"parameter name '{p.Name}' appears twice");
            if (p.DType != DType.F32) throw new ArgumentException($"parameter {p.Name} is {p.DType}; AdamW updates F32 parameters");
            if (!ReferenceEquals(p.Device, _params[0].Device)) throw new ArgumentException($"parameter {p.Name} lives on another device");
        }
        Lr = lr; Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
        _device = _params[0].Device;
        _offsets = new long[_params.Length];
        for (int i = 0; i < _params.Length; i++)
        {
            _offsets[i] = _total;
            _total += _params[i].Length;
        }
        _steps = new long[_params.Length];
        IsPaged = pagedState && !_device.IsCpu;
        if (_device.IsCpu)
        {
            _hostAvg = new float[_total];
            _hostAvgSq = new float[_total];
        }
        else if (IsPaged)
        {
            var acc = _device.Accelerator!;
            _pinnedAvg = acc.AllocatePageLocked1D<float>(Math.Max(_total, 1));
            _pinnedAvgSq = acc.AllocatePageLocked1D<float>(Math.Max(_total, 1));
            _pinnedAvg.Span.Clear();
            _pinnedAvgSq.Span.Clear();
            long capacity = Math.Max(_params.Max(p => p.Length), Math.Min(PagedChunkElements, _total));
            _stageAvg = acc.Allocate1D<float>(Math.Max(capacity, 1));
            _stageAvgSq = acc.Allocate1D<float>(Math.Max(capacity, 1));
        }
        else
        {
            var acc = _device.Accelerator!;
            _devAvg = acc.Allocate1D<float>(Math.Max(_total, 1));
            _devAvgSq = acc.Allocate1D<float>(Math.Max(_total, 1));
            _devAvg.MemSetToZero();
            _devAvgSq.MemSetToZero();
        }
    }

    public double Lr { get; set; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }

    /// <summary>True when the state lives in page-locked host memory (never on the managed CPU device, where all is host memory).</summary>
    public bool IsPaged { get; }

    public IReadOnlyList<Tensor> Parameters => _params;

    /// <summary>Steps taken by parameter <paramref name="index"/> (torch's state["step"]).</summary>
    public long StepOf(int index) => _steps[index];

    /// <summary>One AdamW update of every parameter that has a gradient, with the current <see cref="Lr"/>.</summary>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var active = new List<int>();
        for (int i = 0; i < _params.Length; i++)
        {
            var p = _params[i];
            if (p.Grad is not { } g) continue;
            if (g.DType != DType.F32 || g.Length != p.Length)
                throw new InvalidOperationException($"gradient of {p.Name} is {g.DType} [{string.Join(", ", g.Shape)}], expected F32 with {p.Length} elements");
            if (!ReferenceEquals(g.Device, _device)) throw new InvalidOperationException($"gradient of {p.Name} lives on another device");
            _steps[i]++;
            active.Add(i);
        }
        // Parameters of equal step share the bias corrections, so each group is one set of launches.
        foreach (var group in active.GroupBy(i => _steps[i]))
        {
            var hyper = new AdamWStep(Lr, Beta1, Beta2, Eps, WeightDecay, group.Key);
            var members = group.ToList();
            if (_device.IsCpu) StepHost(members, hyper);
            else if (IsPaged) StepPaged(members, hyper);
            else StepDevice(members, hyper);
        }
    }

    /// <summary>Drops every parameter's gradient (torch's zero_grad(set_to_none=True)).</summary>
    public void ZeroGrad()
    {
        foreach (var p in _params)
        {
            p.Grad?.Dispose();
            p.Grad = null;
        }
    }

    private void StepHost(List<int> members, AdamWStep hyper)
    {
        foreach (int i in members)
        {
            var p = _params[i];
            int off = checked((int)_offsets[i]), n = checked((int)p.Length);
            AdamWKernels.StepCpu<float>(p.Grad!.F32, hyper, p.F32, _hostAvg.AsSpan(off, n), _hostAvgSq.AsSpan(off, n));
        }
    }

    private void StepDevice(List<int> members, AdamWStep hyper)
    {
        var tensors = members.Select(i => new AdamWTensor(_params[i].F32View, _params[i].Grad!.F32View,
            Slice(_devAvg!.View, i), Slice(_devAvgSq!.View, i))).ToList();
        AdamWKernels.StepMulti(_device.RequireKernels(), tensors, hyper);
    }

    private void StepPaged(List<int> members, AdamWStep hyper)
    {
        var stream = _device.Accelerator!.DefaultStream;
        var stageAvg = _stageAvg!;
        var stageAvgSq = _stageAvgSq!;
        long capacity = stageAvg.Length;
        for (int start = 0; start < members.Count;)
        {
            // A chunk: consecutive parameters whose state fits the staging buffers, at most one kernel pack.
            var chunk = new List<(int Index, long At)>();
            long used = 0;
            while (start < members.Count && chunk.Count < AdamWKernels.PackSize && used + _params[members[start]].Length <= capacity)
            {
                chunk.Add((members[start], used));
                used += _params[members[start]].Length;
                start++;
            }
            foreach (var (i, at) in chunk)
            {
                long n = _params[i].Length;
                _pinnedAvg!.ArrayView.SubView(_offsets[i], n).CopyTo(stream, stageAvg.View.SubView(at, n).AsContiguous());
                _pinnedAvgSq!.ArrayView.SubView(_offsets[i], n).CopyTo(stream, stageAvgSq.View.SubView(at, n).AsContiguous());
            }
            AdamWKernels.StepMulti(_device.RequireKernels(), chunk.Select(c => new AdamWTensor(_params[c.Index].F32View,
                _params[c.Index].Grad!.F32View, stageAvg.View.SubView(c.At, _params[c.Index].Length),
                stageAvgSq.View.SubView(c.At, _params[c.Index].Length))).ToList(), hyper);
            foreach (var (i, at) in chunk)
            {
                long n = _params[i].Length;
                stageAvg.View.SubView(at, n).CopyTo(stream, _pinnedAvg!.ArrayView.SubView(_offsets[i], n));
                stageAvgSq.View.SubView(at, n).CopyTo(stream, _pinnedAvgSq!.ArrayView.SubView(_offsets[i], n));
            }
        }
    }

    private ArrayView<float> Slice(ArrayView<float> flat, int i) => flat.SubView(_offsets[i], _params[i].Length);

    // ---- state export / import (checkpoints) ----

    /// <summary>
    /// The optimizer state as named fp32 arrays: "&lt;param&gt;.exp_avg", "&lt;param&gt;.exp_avg_sq" (the parameter's element
    /// count) and "&lt;param&gt;.step" (one element, as torch keeps step as a float tensor), in parameter order.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, float[]>> ExportState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var avg = new float[_total];
        var avgSq = new float[_total];
        if (_device.IsCpu)
        {
            _hostAvg!.CopyTo(avg, 0);
            _hostAvgSq!.CopyTo(avgSq, 0);
        }
        else if (IsPaged)
        {
            _device.Synchronize();
            _pinnedAvg!.Span[..avg.Length].CopyTo(avg);
            _pinnedAvgSq!.Span[..avgSq.Length].CopyTo(avgSq);
        }
        else if (_total > 0)
        {
            _devAvg!.View.SubView(0, _total).CopyToCPU(avg);
            _devAvgSq!.View.SubView(0, _total).CopyToCPU(avgSq);
        }
        var state = new List<KeyValuePair<string, float[]>>(3 * _params.Length);
        for (int i = 0; i < _params.Length; i++)
        {
            var name = _params[i].Name!;
            state.Add(new($"{name}.exp_avg", avg.AsSpan(Range(i)).ToArray()));
            state.Add(new($"{name}.exp_avg_sq", avgSq.AsSpan(Range(i)).ToArray()));
            state.Add(new($"{name}.step", [_steps[i]]));
        }
        return state;
    }

    /// <summary>Restores state written by <see cref="ExportState"/>; every key must be present and no other key may be.</summary>
    public void LoadState(IReadOnlyDictionary<string, float[]> state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var expected = new HashSet<string>();
        var avg = new float[_total];
        var avgSq = new float[_total];
        var steps = new long[_params.Length];
        for (int i = 0; i < _params.Length; i++)
        {
            var name = _params[i].Name!;
            Take($"{name}.exp_avg", _params[i].Length).CopyTo(avg.AsSpan(Range(i)));
            Take($"{name}.exp_avg_sq", _params[i].Length).CopyTo(avgSq.AsSpan(Range(i)));
            float step = Take($"{name}.step", 1)[0];
            if (!(step >= 0 && step == MathF.Floor(step)))
                throw new ArgumentException($"optimizer state '{name}.step' is {step}, not a step count");
            steps[i] = (long)step;
        }
        foreach (var key in state.Keys)
            if (!expected.Contains(key)) throw new ArgumentException($"optimizer state has key '{key}', which names no parameter of this optimizer");
        steps.CopyTo(_steps, 0);
        if (_device.IsCpu)
        {
            avg.CopyTo(_hostAvg!, 0);
            avgSq.CopyTo(_hostAvgSq!, 0);
        }
        else if (IsPaged)
        {
            _device.Synchronize();
            avg.CopyTo(_pinnedAvg!.Span);
            avgSq.CopyTo(_pinnedAvgSq!.Span);
        }
        else if (_total > 0)
        {
            _devAvg!.View.SubView(0, _total).CopyFromCPU(avg);
            _devAvgSq!.View.SubView(0, _total).CopyFromCPU(avgSq);
        }

        float[] Take(string key, long length)
        {
            expected.Add(key);
            if (!state.TryGetValue(key, out var data)) throw new ArgumentException($"optimizer state lacks '{key}'");
            if (data.Length != length) throw new ArgumentException($"optimizer state '{key}' has {data.Length} elements, expected {length}");
            return data;
        }
    }

    private Range Range(int i) => new(checked((int)_offsets[i]), checked((int)(_offsets[i] + _params[i].Length)));

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (IsPaged) _device.Synchronize(); // copies into the page-locked state may still be in flight
        _devAvg?.Dispose();
        _devAvgSq?.Dispose();
        _pinnedAvg?.Dispose();
        _pinnedAvgSq?.Dispose();
        _stageAvg?.Dispose();
        _stageAvgSq?.Dispose();
    }
}
