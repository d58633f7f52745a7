// torch.optim.AdamW over a list of fp32 parameters (formats.md §6.1; amsgrad off, one param group). Per parameter the
// state is exp_avg, exp_avg_sq (fp32, the parameter's shape) and step; a parameter without a gradient is skipped and its
// step not advanced, as torch does. The lr is read at every Step, so a schedule just sets Lr before it.
//
// State layout: all exp_avg in one flat fp32 buffer and all exp_avg_sq in another, each parameter at its offset
// (one allocation, one copy to export, and ready for launches over a flat layout). The device's backend keeps it
// (IOpBackend.CreateAdamWState): float[] on the managed CPU path; device buffers on an accelerator, or with pagedState
// page-locked host memory streamed through the device in chunks of at most PagedChunkElements (IlgpuBackend.AdamW.cs).
using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using Device = IlgpuTune.Core.Device;

namespace IlgpuTune.Training;

public sealed class AdamW : IDisposable
{
    /// <summary>
    /// State elements (per moment) in one chunk when the state is paged; the device holds three chunks (48 MiB). Each chunk
    /// costs the host ~a dozen driver calls to enqueue, which the next forward pass waits behind: 2 Mi keeps a 7B LoRA's
    /// 160 M parameters at 77 chunks.
    /// </summary>
    public const long PagedChunkElements = 1L << 21;

    private readonly Tensor[] _params;
    private readonly long[] _offsets;
    private readonly long[] _steps;
    private readonly long _total;
    private readonly Device _device;

    private readonly IAdamWState _state;
    private bool _disposed;

    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 1e-2, bool pagedState = false)
        : this(parameters, lr, beta1, beta2, eps, weightDecay, pagedState, PagedChunkElements)
    {
    }

    /// <param name="pagedChunkElements">Chunk size of the paged state (tests use tiny ones to get many chunks).</param>
    internal AdamW(IEnumerable<Tensor> parameters, double lr, double beta1, double beta2, double eps, double weightDecay,
        bool pagedState, long pagedChunkElements)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pagedChunkElements, 1);
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
        _state = _device.Backend.CreateAdamWState(_total, pagedState, pagedChunkElements);
    }

    public double Lr { get; set; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }

    /// <summary>True when the state lives in page-locked host memory (never on the managed CPU device, where all is host memory).</summary>
    public bool IsPaged => _state.IsPaged;

    public IReadOnlyList<Tensor> Parameters => _params;

    /// <summary>Steps taken by parameter <paramref name="index"/> (torch's state["step"]).</summary>
    public long StepOf(int index) => _steps[index];

    /// <summary>One AdamW update of every parameter that has a gradient, with the current <see cref="Lr"/>.</summary>
    /// <remarks>
    /// With paged state the update runs beside the next launches on the device (its PCIe traffic hides under the next forward
    /// pass; a launch reading a parameter waits for that parameter's update, and the update keeps that parameter's gradient
    /// alive until then); <see cref="Settle"/> joins what is left.
    /// </remarks>
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
            p.BumpVersion(); // its kept 16-bit casts (LoRA's A and B) are stale from here
        }
        // Parameters of equal step share the bias corrections, so each group is one set of launches.
        _state.Step(active.GroupBy(i => _steps[i]).Select(group => new AdamWGroup(
            new AdamWStep(Lr, Beta1, Beta2, Eps, WeightDecay, group.Key),
            group.Select(i => new AdamWSlice(_params[i], _offsets[i])).ToList())).ToList());
    }

    /// <summary>Drops every parameter's gradient (torch's zero_grad(set_to_none=True)).</summary>
    public void ZeroGrad()
    {
        foreach (var p in _params)
        {
            p.Grad?.Dispose(); // a paged step still running holds its own reference (IAdamWState.Step)
            p.Grad = null;
        }
    }

    /// <summary>
    /// Orders all later device work after the last <see cref="Step"/> (on the device; the host does not wait), releasing the
    /// gradients it still held. The trainer calls it after the forward pass, which has by then waited for every parameter
    /// it read (and so released most of them); a no-op for state on the device or the host.
    /// </summary>
    public void Settle() => _state.Settle();

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
        _state.Export(avg, avgSq);
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
        Settle();
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
        _state.Import(avg, avgSq);

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
        Settle();
        _disposed = true;
        _state.Dispose();
    }
}
