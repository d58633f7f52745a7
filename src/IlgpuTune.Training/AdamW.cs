// torch.optim.AdamW over a list of fp32 parameters (formats.md §6.1; amsgrad off, one param group). Per parameter the
// state is exp_avg, exp_avg_sq (fp32, the parameter's shape) and step; a parameter without a gradient is skipped and its
// step not advanced, as torch does. The lr is read at every Step, so a schedule just sets Lr before it.
//
// State layout: all exp_avg in one flat fp32 buffer and all exp_avg_sq in another, each parameter at its offset
// (one allocation, one copy to export, and ready for launches over a flat layout). Where it lives:
//   managed CPU device: float[] on the heap, updated by the CPU reference;
//   accelerator:        device buffers, updated by the multi-tensor kernel (one launch per 8 tensors of equal step);
//   accelerator, paged: page-locked host memory (Accelerator.AllocatePageLocked1D), streamed through the device in
//                       chunks of at most PagedChunkElements state elements (a parameter may span chunks: the update is
//                       elementwise, so the pieces give bitwise the same result). Three staging slots in a ring and two
//                       copy streams of their own overlap, while chunk j is updated on the default stream, the upload of
//                       chunk j+1 with the download of chunk j-1 (PCIe copies both ways at once; the copies, not the
//                       kernel, bound this path). See StepPaged for the ordering.
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using Device = IlgpuTune.Core.Device;
using AdamWKernels = IlgpuTune.Kernels.AdamW;

namespace IlgpuTune.Training;

public sealed class AdamW : IDisposable
{
    /// <summary>State elements (per moment) in one chunk when the state is paged; the device holds three chunks.</summary>
    public const long PagedChunkElements = 1L << 19;

    // Staging slots in the ring: chunk j+1 is uploaded into the slot chunk j-2 used, so it need not wait for chunk j-1's download.
    private const int StagingSlots = 3;

    private readonly Tensor[] _params;
    private readonly long[] _offsets;
    private readonly long[] _steps;
    private readonly long _total;
    private readonly Device _device;

    private readonly float[]? _hostAvg, _hostAvgSq;
    private readonly MemoryBuffer1D<float, Stride1D.Dense>? _devAvg, _devAvgSq;
    private readonly PageLockedArray1D<float>? _pinnedAvg, _pinnedAvgSq;
    private readonly MemoryBuffer1D<float, Stride1D.Dense>[]? _stages; // per slot: exp_avg in [0, c), exp_avg_sq in [c, 2c)
    private readonly long _chunkElements;
    private readonly AcceleratorStream? _upload, _download;
    private readonly StreamOrder? _order;
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
            _chunkElements = Math.Max(1, Math.Min(pagedChunkElements, _total));
            _stages = new MemoryBuffer1D<float, Stride1D.Dense>[StagingSlots];
            for (int s = 0; s < StagingSlots; s++) _stages[s] = acc.Allocate1D<float>(2 * _chunkElements);
            _deviceBytes = StagingSlots * 2 * _chunkElements * sizeof(float);
            _upload = acc.CreateStream();
            _download = acc.CreateStream();
            _order = new StreamOrder(acc);
        }
        else
        {
            var acc = _device.Accelerator!;
            _devAvg = acc.Allocate1D<float>(Math.Max(_total, 1));
            _devAvgSq = acc.Allocate1D<float>(Math.Max(_total, 1));
            _devAvg.MemSetToZero();
            _devAvgSq.MemSetToZero();
            _deviceBytes = _devAvg.LengthInBytes + _devAvgSq.LengthInBytes;
        }
        if (!_device.IsCpu) _device.Allocator.TrackExternal(_deviceBytes); // the reported peak includes the optimizer's share
    }

    private readonly long _deviceBytes;

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
        var chunks = new List<Chunk>();
        foreach (var group in active.GroupBy(i => _steps[i]))
        {
            var hyper = new AdamWStep(Lr, Beta1, Beta2, Eps, WeightDecay, group.Key);
            var members = group.ToList();
            if (_device.IsCpu) StepHost(members, hyper);
            else if (IsPaged) chunks.AddRange(Chunks(members, hyper));
            else StepDevice(members, hyper);
        }
        if (chunks.Count > 0) StepPaged(chunks);
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

    // A piece: elements [From, From + Length) of parameter Index, staged at At in its chunk's slot.
    private readonly record struct Piece(int Index, long From, long Length, long At);

    private sealed record Chunk(AdamWStep Hyper, List<Piece> Pieces);

    // Cuts the state of the members (one step group) into chunks of at most _chunkElements, splitting parameters as needed.
    private List<Chunk> Chunks(List<int> members, AdamWStep hyper)
    {
        var chunks = new List<Chunk>();
        Chunk? open = null;
        long used = 0;
        foreach (int i in members)
        {
            for (long from = 0; from < _params[i].Length;)
            {
                if (open == null || used == _chunkElements)
                {
                    chunks.Add(open = new Chunk(hyper, []));
                    used = 0;
                }
                long n = Math.Min(_params[i].Length - from, _chunkElements - used);
                open.Pieces.Add(new Piece(i, from, n, used));
                used += n;
                from += n;
            }
        }
        return chunks;
    }

    // Chunk j uses slot j % 3. Enqueued per j, in this order (Order(a, b): later work on b waits for the work on a so far):
    //   Order(upload, compute)     kernel j after upload j (upload j+1 is not enqueued yet)
    //   kernel j                   on the default stream, where the gradients were made and the allocator expects its users
    //   Order(download, upload)    upload j+1 into the slot of chunk j-2 after download j-2 (download j-1 is not enqueued yet)
    //   upload j+1
    //   download j-1               already behind kernel j-1 (the Order below, one round earlier)
    //   Order(compute, download)   download j after kernel j
    // so kernel j, upload j+1 and download j-1 run at once. A step starts behind the last step's downloads (they may still
    // run while the next forward pass does), because its uploads read the host state those downloads write.
    private void StepPaged(List<Chunk> chunks)
    {
        var compute = _device.Accelerator!.DefaultStream;
        var kernels = _device.RequireKernels();
        _order!.Order(_download!, _upload!);
        Copy(chunks[0], 0, toDevice: true);
        for (int j = 0; j < chunks.Count; j++)
        {
            _order.Order(_upload!, compute);
            var stage = _stages![j % StagingSlots].View.AsContiguous();
            AdamWKernels.StepMulti(kernels, chunks[j].Pieces.Select(c =>
            {
                var p = _params[c.Index];
                return new AdamWTensor(p.F32View.SubView(c.From, c.Length), p.Grad!.F32View.SubView(c.From, c.Length),
                    stage.SubView(c.At, c.Length), stage.SubView(_chunkElements + c.At, c.Length));
            }).ToList(), chunks[j].Hyper);
            if (j + 1 < chunks.Count)
            {
                _order.Order(_download!, _upload!);
                Copy(chunks[j + 1], j + 1, toDevice: true);
            }
            if (j > 0) Copy(chunks[j - 1], j - 1, toDevice: false);
            _order.Order(compute, _download!);
        }
        Copy(chunks[^1], chunks.Count - 1, toDevice: false);
    }

    // Both moments of chunk `number` between host state and its slot, on the upload or download stream. Pieces that are
    // neighbours in the flat host state are neighbours in the slot too, so they go as one copy.
    private void Copy(Chunk chunk, int number, bool toDevice)
    {
        var stage = _stages![number % StagingSlots].View.AsContiguous();
        var stream = toDevice ? _upload! : _download!;
        var pieces = chunk.Pieces;
        for (int a = 0; a < pieces.Count;)
        {
            long host = _offsets[pieces[a].Index] + pieces[a].From, length = pieces[a].Length;
            int b = a + 1;
            for (; b < pieces.Count && _offsets[pieces[b].Index] + pieces[b].From == host + length; b++) length += pieces[b].Length;
            long at = pieces[a].At;
            var avg = _pinnedAvg!.ArrayView.SubView(host, length);
            var avgSq = _pinnedAvgSq!.ArrayView.SubView(host, length);
            var stageAvg = stage.SubView(at, length);
            var stageAvgSq = stage.SubView(_chunkElements + at, length);
            if (toDevice)
            {
                avg.CopyTo(stream, stageAvg);
                avgSq.CopyTo(stream, stageAvgSq);
            }
            else
            {
                stageAvg.CopyTo(stream, avg);
                stageAvgSq.CopyTo(stream, avgSq);
            }
            a = b;
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
            _device.Synchronize(); // the whole context: the copy streams too
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
            _device.Synchronize(); // no upload may still be reading the state
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
        if (IsPaged) _device.Synchronize(); // copies into the page-locked state may still be in flight (on every stream)
        _devAvg?.Dispose();
        _devAvgSq?.Dispose();
        _upload?.Dispose();
        _download?.Dispose();
        _order?.Dispose();
        if (_stages != null) foreach (var stage in _stages) stage.Dispose();
        _pinnedAvg?.Dispose();
        _pinnedAvgSq?.Dispose();
        if (!_device.IsCpu) _device.Allocator.TrackExternal(-_deviceBytes);
    }
}
