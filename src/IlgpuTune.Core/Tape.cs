// Reverse-mode autograd tape. Ops record an entry (inputs, outputs, saved tensors, a backward closure) while a tape is
// active and grad mode is on; Backward walks the entries in reverse (recording order is a topological order), hands
// each closure the gradients of its outputs, and accumulates what it returns: into a dictionary for intermediate tensors
// (freed as soon as their producer has consumed them) and into Tensor.Grad for leaves (parameters), which keep
// accumulating across backward calls until cleared (gradient accumulation). Saved activations are freed right after
// their entry runs. Tape.Checkpoint records a whole block as one entry that re-runs the block's forward under a nested
// tape in backward (gradient checkpointing).
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public sealed class BackwardContext
{
    private readonly Tape _tape;
    private readonly Tape.Entry _entry;
    private readonly Tensor?[] _gradOutputs;

    internal BackwardContext(Tape tape, Tape.Entry entry, Tensor?[] gradOutputs)
    {
        _tape = tape;
        _entry = entry;
        _gradOutputs = gradOutputs;
    }

    /// <summary>The gradient w.r.t. output <paramref name="i"/>, or null when nothing flowed into it (treat as zero).</summary>
    public Tensor? GradOutput(int i = 0) => _gradOutputs[i];

    /// <summary>Whether input <paramref name="i"/> wants a gradient (skip computing it otherwise).</summary>
    public bool NeedsGrad(int i) => _entry.Inputs[i] is { RequiresGrad: true };

    /// <summary>Adds <paramref name="grad"/> to input <paramref name="i"/>'s gradient; takes ownership of it.</summary>
    public void AddGrad(int i, Tensor grad) => _tape.Accumulate(_entry.Inputs[i], grad);
}

public sealed class Tape : IDisposable
{
    internal sealed record Entry(string Op, Tensor?[] Inputs, Tensor[] Outputs, IDisposable[] Saved, Action<BackwardContext> Backward);

    [ThreadStatic] private static Tape? s_current;
    [ThreadStatic] private static int s_noGrad;
    [ThreadStatic] private static int s_checkpointForward;

    private readonly Tape? _parent;
    private readonly List<Entry> _entries = [];
    private readonly HashSet<Tensor> _produced = new(ReferenceEqualityComparer.Instance);
    private Dictionary<Tensor, Tensor>? _grads;
    private bool _disposed;

    /// <summary>Starts recording on this thread until disposed.</summary>
    public Tape()
    {
        _parent = s_current;
        s_current = this;
    }

    /// <summary>The tape ops record into now, or null (no tape, or inside a NoGrad scope).</summary>
    public static Tape? Current => s_noGrad > 0 ? null : s_current;

    /// <summary>
    /// True while a checkpointed block runs its first, unrecorded forward: its activations are dropped at once, and so should
    /// be anything an op would keep only for reuse (it would pile up over every layer until backward).
    /// </summary>
    public static bool InCheckpointForward => s_checkpointForward > 0;

    public int Count => _entries.Count;

    /// <summary>Suspends recording on this thread until the returned scope is disposed.</summary>
    public static IDisposable NoGrad()
    {
        s_noGrad++;
        return new Scope(() => s_noGrad--);
    }

    /// <summary>True when an op on these inputs must be recorded.</summary>
    public static bool IsRecording(params ReadOnlySpan<Tensor?> inputs)
    {
        if (Current is null) return false;
        foreach (var t in inputs)
            if (t is { RequiresGrad: true }) return true;
        return false;
    }

    /// <summary>
    /// Records an op. Outputs are marked RequiresGrad. The tape owns <paramref name="saved"/> (aliases the closure reads) and
    /// disposes them after the entry's backward ran or when the tape is disposed.
    /// </summary>
    public static void Record(string op, Tensor?[] inputs, Tensor[] outputs, Action<BackwardContext> backward, params Tensor[] saved) =>
        Record(op, inputs, outputs, backward, (IDisposable[])saved);

    private static void Record(string op, Tensor?[] inputs, Tensor[] outputs, Action<BackwardContext> backward, IDisposable[] saved)
    {
        var tape = Current ?? throw new InvalidOperationException($"{op}: Record called while not recording");
        foreach (var o in outputs)
        {
            o.RequiresGrad = true;
            tape._produced.Add(o);
        }
        tape._entries.Add(new Entry(op, inputs, outputs, saved, backward));
    }

    /// <summary>Back-propagates from <paramref name="loss"/> (seeded with <paramref name="seed"/>, e.g. a loss scale).</summary>
    public void Backward(Tensor loss, float seed = 1f)
    {
        var seedGrad = Tensor.Empty(loss.Device, DType.F32, loss.Shape);
        using (NoGrad()) Ops.FillInPlace(seedGrad, seed);
        Backward(loss, seedGrad);
    }

    /// <summary>Back-propagates <paramref name="gradOutput"/> (taken over) from <paramref name="output"/>.</summary>
    public void Backward(Tensor output, Tensor gradOutput)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!output.RequiresGrad)
        {
            gradOutput.Dispose();
            throw new InvalidOperationException("Backward: the output does not depend on any tensor that requires grad");
        }
        using (NoGrad())
        {
            _grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
            Accumulate(output, gradOutput);
            for (int e = _entries.Count - 1; e >= 0; e--)
            {
                var entry = _entries[e];
                var gradOutputs = entry.Outputs.Select(o => _grads.GetValueOrDefault(o)).ToArray();
                if (gradOutputs.Any(g => g is not null))
                    entry.Backward(new BackwardContext(this, entry, gradOutputs));
                foreach (var o in entry.Outputs)
                    if (_grads.Remove(o, out var g)) g.Dispose();
                Release(entry);
            }
            foreach (var g in _grads.Values) g.Dispose();
            _grads = null;
            _entries.Clear();
            _produced.Clear();
        }
    }

    /// <summary>
    /// Gradient checkpointing: runs <paramref name="block"/> without recording (its activations are freed at once), keeping
    /// only its inputs; in backward it re-runs the block under a nested tape and back-propagates through that. Parameters the
    /// block uses get their gradients as usual. The block must be deterministic (derive dropout RNGs from a captured seed).
    /// </summary>
    public static Tensor Checkpoint(Func<Tensor[], Tensor> block, params Tensor[] inputs) => Checkpoint(block, null, inputs);

    /// <summary>
    /// <see cref="Checkpoint(Func{Tensor[], Tensor}, Tensor[])"/> keeping its first input in <paramref name="storeFirstAs"/>
    /// (BF16/F16; half the memory of an F32 activation) until the recompute widens it again. Exact only when that input
    /// holds 16-bit values already (Ops.RoundTo); its gradient stays F32.
    /// </summary>
    public static Tensor Checkpoint(Func<Tensor[], Tensor> block, DType? storeFirstAs, params Tensor[] inputs) =>
        Checkpoint(block, storeFirstAs, null, inputs);

    /// <summary>
    /// <see cref="Checkpoint(Func{Tensor[], Tensor}, DType?, Tensor[])"/> handing its stored first input to host memory
    /// through <paramref name="offloadFirst"/> until the recompute fetches it back (bitwise); the other inputs stay.
    /// </summary>
    public static Tensor Checkpoint(Func<Tensor[], Tensor> block, DType? storeFirstAs, OffloadChain? offloadFirst, params Tensor[] inputs)
    {
        if (Current is null) return block(inputs);
        Tensor output;
        using (NoGrad())
        {
            s_checkpointForward++;
            try
            {
                output = block(inputs);
            }
            finally
            {
                s_checkpointForward--;
            }
        }
        var saved = inputs.Select((t, i) => i == 0 && storeFirstAs is { } d ? Ops.CastRaw(t, d) : t.Alias()).ToArray();
        var away = offloadFirst?.Offload(saved[0]); // owns saved[0] from here
        var needs = inputs.Select(t => t.RequiresGrad).ToArray();
        var dtypes = inputs.Select(t => t.DType).ToArray(); // the inputs may be disposed before backward
        IDisposable[] owned = away is null ? saved : [away, .. saved[1..]];
        Record("checkpoint", inputs, [output], ctx =>
        {
            int outer = s_noGrad;
            s_noGrad = 0; // the backward pass runs under NoGrad; the recompute must record
            try
            {
                using var tape = new Tape();
                Tensor[] leaves;
                using (var first = away?.Fetch())
                    leaves = saved.Select((t, i) =>
                    {
                        if (i == 0 && first is not null) t = first;
                        var l = t.DType == dtypes[i] ? t.Alias() : Ops.CastRaw(t, dtypes[i]);
                        l.RequiresGrad = needs[i];
                        return l;
                    }).ToArray();
                try
                {
                    using var recomputed = block(leaves);
                    if (recomputed.RequiresGrad) tape.Backward(recomputed, ctx.GradOutput()!.Alias());
                    for (int i = 0; i < leaves.Length; i++)
                        if (leaves[i].Grad is { } g)
                        {
                            leaves[i].Grad = null;
                            ctx.AddGrad(i, g);
                        }
                }
                finally
                {
                    foreach (var l in leaves) l.Dispose();
                }
            }
            finally
            {
                s_noGrad = outer;
            }
        }, owned);
        return output;
    }

    internal void Accumulate(Tensor? target, Tensor grad)
    {
        if (target is null || !target.RequiresGrad)
        {
            grad.Dispose();
            return;
        }
        if (grad.Length != target.Length)
            throw new InvalidOperationException($"gradient for {target} has {grad.Length} elements, expected {target.Length}");
        if (_produced.Contains(target))
        {
            // Intermediate grads may share storage (add hands one gradient to both inputs): sum out of place.
            if (_grads!.Remove(target, out var existing))
            {
                _grads[target] = Ops.AddNoGrad(existing, grad);
                existing.Dispose();
                grad.Dispose();
            }
            else _grads[target] = grad;
        }
        else if (target.Grad is null)
        {
            // A leaf's grad is owned by it alone (optimizers scale it in place), so never adopt shared storage.
            var own = grad.IsStorageShared ? grad.Clone() : grad.Alias();
            grad.Dispose();
            target.Grad = own.Shape.SequenceEqual(target.Shape) ? own : Reshape(own, target.Shape);
        }
        else
        {
            Ops.AccumulateInPlace(target.Grad, grad);
            grad.Dispose();
        }
    }

    private static Tensor Reshape(Tensor grad, int[] shape)
    {
        var r = grad.Reshaped(shape);
        grad.Dispose();
        return r;
    }

    private static void Release(Entry entry)
    {
        foreach (var s in entry.Saved) s.Dispose();
    }

    /// <summary>Drops every recorded entry and its saved tensors without running backward.</summary>
    public void Clear()
    {
        foreach (var e in _entries) Release(e);
        _entries.Clear();
        _produced.Clear();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Clear();
        if (ReferenceEquals(s_current, this)) s_current = _parent;
    }

    private sealed class Scope(Action onDispose) : IDisposable
    {
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            onDispose();
        }
    }
}
