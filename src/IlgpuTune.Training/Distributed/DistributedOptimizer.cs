// The optimizer step of a data-parallel job, in DeepSpeed's three flavours (formats as in AdamW.cs):
//   stage 0 (DDP): gradients averaged over ranks by all-reduce in buckets of BucketElements at the end of the window;
//                  every rank clips and steps a full AdamW (the single-GPU class, so the update is the same code).
//   stage 1 (ZeRO-1): AdamW state sharded. The trainable tensors are laid end to end in one flat fp32 space, padded to a
//                  multiple of the world size; rank r owns elements [r*S, (r+1)*S). At the end of the window the local
//                  gradients are reduce-scattered (averaged) into the rank's shard, the rank updates its shard (AdamW
//                  over one flat tensor: the same elementwise update), and the shards are all-gathered back into the
//                  parameters.
//   stage 2 (ZeRO-2): gradients sharded too: after every micro-batch's backward the gradients are reduce-scattered
//                  into the shard's accumulator and the full gradients dropped, so only 1/N of them outlives a backward.
// Clipping uses the global norm: stage 0 the usual per-tensor norms of the (identical) averaged gradients; stages 1/2
// the square root of the all-reduced sums of squares of the shards (the same norm in exact arithmetic).
// A trainable tensor without a gradient counts as a zero gradient (DeepSpeed's flat buffers do the same), so
// every rank sends the same layout. The state exports in AdamW's per-parameter format, consolidated on every rank,
// so checkpoints are the single-GPU ones and load into any world size.
using IlgpuTune.Core;
using IlgpuTune.Distributed;
using IlgpuTune.Numerics;

namespace IlgpuTune.Training.Distributed;

public sealed class DistributedOptimizer : IDisposable
{
    /// <summary>DDP's default bucket (25 MiB of fp32).</summary>
    public const long DefaultBucketElements = 25L * 1024 * 1024 / 4;

    private const string ShardName = "zero_shard";

    private readonly ICommunicator _comm;
    private readonly Tensor[] _params;
    private readonly long[] _offsets;
    private readonly long _total, _shard;
    private readonly long _bucketElements;
    private readonly Device _device;
    private readonly AdamW _adamW;
    private readonly Tensor? _shardParam; // stages 1 / 2: this rank's fp32 master slice of the flat parameters
    private Tensor? _shardGrad;           // stage 2: the accumulated gradient shard of the window

    public DistributedOptimizer(ICommunicator comm, IEnumerable<Tensor> trainable, int stage, double lr, double beta1, double beta2,
        double eps, double weightDecay, bool pagedState, long bucketElements = DefaultBucketElements)
    {
        if (stage is < 0 or > 2) throw new ArgumentOutOfRangeException(nameof(stage), stage, "ZeRO stage 0, 1 or 2 (stage 3 shards parameters: not supported)");
        ArgumentOutOfRangeException.ThrowIfLessThan(bucketElements, 1);
        _comm = comm;
        Stage = stage;
        _params = trainable.ToArray();
        if (_params.Length == 0) throw new ArgumentException("optimizer got an empty parameter list", nameof(trainable));
        _device = _params[0].Device;
        _bucketElements = bucketElements;
        _offsets = new long[_params.Length];
        for (int i = 0; i < _params.Length; i++)
        {
            _offsets[i] = _total;
            _total += _params[i].Length;
        }
        _shard = (_total + comm.WorldSize - 1) / comm.WorldSize;
        if (stage == 0)
        {
            _adamW = new AdamW(_params, lr, beta1, beta2, eps, weightDecay, pagedState);
            return;
        }
        _shardParam = Tensor.Zeros(_device, DType.F32, checked((int)_shard)).Named(ShardName);
        using (var flat = Flatten(p => p))
            _device.Backend.Copy(flat, comm.Rank * _shard, _shardParam, 0, _shard);
        _adamW = new AdamW([_shardParam], lr, beta1, beta2, eps, weightDecay, pagedState);
    }

    /// <summary>0: all-reduce (DDP), 1: optimizer state sharded, 2: gradients sharded too.</summary>
    public int Stage { get; }

    public double Lr { get => _adamW.Lr; set => _adamW.Lr = value; }

    /// <summary>Elements of optimizer state this rank holds per moment (all of them at stage 0, 1/N at stages 1 and 2).</summary>
    public long StateElements => Stage == 0 ? _total : _shard;

    /// <summary>After each micro-batch's backward: stage 2 moves the gradients into this rank's shard; otherwise nothing.</summary>
    public void AfterBackward()
    {
        if (Stage != 2) return;
        using var part = ReduceScatterGrads();
        if (_shardGrad is null) _shardGrad = part.Alias();
        else _device.Backend.Accumulate(part, _shardGrad);
    }

    /// <summary>
    /// The end of an accumulation window: synchronizes the gradients, clips them to <paramref name="maxNorm"/> (0: no
    /// clipping) by the global norm and, when that norm is finite and <paramref name="skip"/> is false, updates the
    /// parameters. Clears the gradients. Returns the global norm before clipping and whether the update ran.
    /// </summary>
    public (float Norm, bool Stepped) Step(float maxNorm, bool skip)
    {
        try
        {
            if (Stage == 0) return StepReplicated(maxNorm, skip);
            var grad = Stage == 2 ? _shardGrad ?? Tensor.Zeros(_device, DType.F32, checked((int)_shard)) : ReduceScatterGrads();
            _shardGrad = null;
            _shardParam!.Grad?.Dispose();
            _shardParam.Grad = grad;
            ZeroParamGrads();
            using var sq = Tensor.FromArray(_device, [(float)GradOps.SumsOfSquares([grad])[0]], 1);
            _comm.AllReduce(sq, ReduceOp.Sum);
            float norm = MathF.Sqrt(sq.Item());
            if (maxNorm > 0) GradOps.MultiplyAndCheck([grad], MathF.Min(1f / (norm + 1e-6f) * maxNorm, 1f));
            bool step = !skip && float.IsFinite(norm);
            if (step)
            {
                _adamW.Step();
                _adamW.Settle(); // the all-gather reads the shard on its own stream
                using var flat = Tensor.Empty(_device, DType.F32, checked((int)(_shard * _comm.WorldSize)));
                _comm.AllGather(_shardParam, flat);
                for (int i = 0; i < _params.Length; i++)
                {
                    _device.Backend.Copy(flat, _offsets[i], _params[i], 0, _params[i].Length);
                    _params[i].BumpVersion();
                }
            }
            _adamW.ZeroGrad();
            return (norm, step);
        }
        finally
        {
            ZeroParamGrads();
        }
    }

    private (float, bool) StepReplicated(float maxNorm, bool skip)
    {
        AllReduceGrads();
        float norm = maxNorm > 0 ? GradClipping.ClipGradNorm(_params, maxNorm) : GradClipping.GradNorm(_params);
        bool step = !skip && float.IsFinite(norm);
        if (step)
        {
            _adamW.Step();
            _adamW.Settle(); // the next all-reduce of gradients runs on its own stream
        }
        return (norm, step);
    }

    /// <summary>
    /// Before saving mid-window (a collective): the window's gradients so far, averaged over ranks, into every tensor's
    /// Grad on every rank, for a checkpoint in the single-GPU format. Stages 0/1 go on from these averaged gradients (the
    /// window's average is the same sum regrouped), so a run resumed from the checkpoint continues exactly as this one.
    /// Stage 2 gathers its shards; <see cref="AdoptGrads"/> hands them back.
    /// </summary>
    public void ConsolidateGrads()
    {
        if (Stage == 2)
        {
            if (_shardGrad is null) return;
            using var flat = Tensor.Empty(_device, DType.F32, checked((int)(_shard * _comm.WorldSize)));
            _comm.AllGather(_shardGrad, flat);
            for (int i = 0; i < _params.Length; i++)
            {
                _params[i].Grad ??= Tensor.Empty(_device, DType.F32, _params[i].Shape);
                _device.Backend.Copy(flat, _offsets[i], _params[i].Grad!, 0, _params[i].Length);
            }
            return;
        }
        if (_params.Any(p => p.Grad is not null)) AllReduceGrads();
    }

    /// <summary>
    /// After a save or a resume: gradients in the tensors' Grad that are already averaged over ranks (ConsolidateGrads, or a
    /// checkpoint) become the window's running gradient: stage 2 keeps its slice as the shard's accumulator (the same bits
    /// it held before the save); stages 0/1 keep them as they are.
    /// </summary>
    public void AdoptGrads()
    {
        if (Stage != 2 || _params.All(p => p.Grad is null)) return;
        using var flat = Flatten(p => p.Grad);
        _shardGrad?.Dispose();
        _shardGrad = Tensor.Empty(_device, DType.F32, checked((int)_shard));
        _device.Backend.Copy(flat, _comm.Rank * _shard, _shardGrad, 0, _shard);
        ZeroParamGrads();
    }

    // Every tensor's gradient averaged over ranks, in buckets of whole tensors (one all-reduce on a flat buffer each).
    private void AllReduceGrads()
    {
        EnsureGrads();
        for (int first = 0; first < _params.Length;)
        {
            int last = first;
            long size = _params[first].Length;
            while (last + 1 < _params.Length && size + _params[last + 1].Length <= _bucketElements) size += _params[++last].Length;
            using var bucket = Tensor.Empty(_device, DType.F32, checked((int)size));
            for (int i = first; i <= last; i++) _device.Backend.Copy(_params[i].Grad!, 0, bucket, _offsets[i] - _offsets[first], _params[i].Length);
            _comm.AllReduce(bucket, ReduceOp.Avg);
            for (int i = first; i <= last; i++) _device.Backend.Copy(bucket, _offsets[i] - _offsets[first], _params[i].Grad!, 0, _params[i].Length);
            first = last + 1;
        }
    }

    private void EnsureGrads()
    {
        foreach (var p in _params) p.Grad ??= Tensor.Zeros(_device, DType.F32, p.Shape);
    }

    // The local gradients laid flat (zeros where a tensor has none, and in the padding), reduce-scattered (averaged).
    private Tensor ReduceScatterGrads()
    {
        using var flat = Flatten(p => p.Grad);
        var part = Tensor.Empty(_device, DType.F32, checked((int)_shard));
        _comm.ReduceScatter(flat, part, ReduceOp.Avg);
        ZeroParamGrads();
        return part;
    }

    private Tensor Flatten(Func<Tensor, Tensor?> pick)
    {
        var flat = Tensor.Zeros(_device, DType.F32, checked((int)(_shard * _comm.WorldSize)));
        for (int i = 0; i < _params.Length; i++)
            if (pick(_params[i]) is { } t) _device.Backend.Copy(t, 0, flat, _offsets[i], _params[i].Length);
        return flat;
    }

    private void ZeroParamGrads()
    {
        foreach (var p in _params)
        {
            p.Grad?.Dispose();
            p.Grad = null;
        }
    }

    // ---- state: AdamW's per-parameter format, whole on every rank ----

    /// <summary>AdamW.ExportState's keys and arrays for every trainable tensor (stages 1/2 gather the shards; a collective).</summary>
    public IReadOnlyList<KeyValuePair<string, float[]>> ExportState()
    {
        if (Stage == 0) return _adamW.ExportState();
        var shard = _adamW.ExportState().ToDictionary(kv => kv.Key, kv => kv.Value);
        float[] avg = Gather(shard[$"{ShardName}.exp_avg"]), avgSq = Gather(shard[$"{ShardName}.exp_avg_sq"]);
        float step = shard[$"{ShardName}.step"][0];
        var state = new List<KeyValuePair<string, float[]>>(3 * _params.Length);
        for (int i = 0; i < _params.Length; i++)
        {
            var range = new Range(checked((int)_offsets[i]), checked((int)(_offsets[i] + _params[i].Length)));
            state.Add(new($"{_params[i].Name}.exp_avg", avg[range]));
            state.Add(new($"{_params[i].Name}.exp_avg_sq", avgSq[range]));
            state.Add(new($"{_params[i].Name}.step", [step]));
        }
        return state;

        float[] Gather(float[] local)
        {
            using var part = Tensor.FromArray(_device, local, local.Length);
            using var all = Tensor.Empty(_device, DType.F32, local.Length * _comm.WorldSize);
            _comm.AllGather(part, all);
            return all.ToFloatArray();
        }
    }

    /// <summary>Loads a state written by ExportState or by a single-GPU AdamW (any world size); every rank passes the whole state.</summary>
    public void LoadState(IReadOnlyDictionary<string, float[]> state)
    {
        if (Stage == 0)
        {
            _adamW.LoadState(state);
            return;
        }
        // Validate everything through a full AdamW's loader (the same key and size checks), then keep this rank's slice.
        var avg = new float[_shard * _comm.WorldSize];
        var avgSq = new float[avg.Length];
        float? step = null;
        var expected = new HashSet<string>();
        for (int i = 0; i < _params.Length; i++)
        {
            string name = _params[i].Name!;
            Take($"{name}.exp_avg", _params[i].Length).CopyTo(avg, _offsets[i]);
            Take($"{name}.exp_avg_sq", _params[i].Length).CopyTo(avgSq, _offsets[i]);
            float s = Take($"{name}.step", 1)[0];
            if (step is { } first && s != first)
                throw new ArgumentException($"optimizer state '{name}.step' is {s}, other tensors' {first}: a sharded optimizer steps every tensor together");
            step = s;
        }
        foreach (var key in state.Keys)
            if (!expected.Contains(key)) throw new ArgumentException($"optimizer state has key '{key}', which names no parameter of this optimizer");
        var lo = checked((int)(_comm.Rank * _shard));
        _adamW.LoadState(new Dictionary<string, float[]>
        {
            [$"{ShardName}.exp_avg"] = avg.AsSpan(lo, (int)_shard).ToArray(),
            [$"{ShardName}.exp_avg_sq"] = avgSq.AsSpan(lo, (int)_shard).ToArray(),
            [$"{ShardName}.step"] = [step!.Value],
        });

        float[] Take(string key, long length)
        {
            expected.Add(key);
            if (!state.TryGetValue(key, out var data)) throw new ArgumentException($"optimizer state lacks '{key}'");
            if (data.Length != length) throw new ArgumentException($"optimizer state '{key}' has {data.Length} elements, expected {length}");
            return data;
        }
    }

    /// <summary>After the parameters were loaded from a checkpoint: refresh this rank's master shard from them.</summary>
    public void ReloadParameters()
    {
        if (_shardParam is null) return;
        using var flat = Flatten(p => p);
        _device.Backend.Copy(flat, _comm.Rank * _shard, _shardParam, 0, _shard);
    }

    public void Dispose()
    {
        _adamW.Dispose();
        _shardGrad?.Dispose();
        _shardParam?.Grad?.Dispose();
        _shardParam?.Dispose();
    }
}
