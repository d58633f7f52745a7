namespace IlgpuTune.IO;

/// <summary>
/// Produces items ahead of a sequential consumer, in parallel, and hands them over in order: <see cref="Take"/>(i) returns
/// item i's bytes once produced. At most <paramref name="parallelism"/> producers run at a time, and the costs of the items
/// started but not yet consumed stay within <paramref name="budgetBytes"/> (an item costing more than the budget still starts,
/// alone, when the consumer waits for it) — so memory is bounded by the budget plus one oversized item. An item counts as
/// consumed when the next one is taken (or at Dispose). A producer's exception is rethrown by Take for that item; no item
/// after a failure is started. Dispose waits for every started producer, so none outlives the sources it reads.
/// </summary>
public sealed class OrderedPipeline<T> : IDisposable
{
    private readonly IReadOnlyList<T> _items;
    private readonly Func<T, ReadOnlyMemory<byte>> _produce;
    private readonly Func<T, long> _cost;
    private readonly Action<T>? _consumed;
    private readonly long _budget;
    private readonly int _parallelism;
    private readonly Task<ReadOnlyMemory<byte>>?[] _tasks;
    private readonly Lock _lock = new();
    private int _started, _running, _next;
    private long _held;
    private bool _failed;

    /// <param name="consumed">Called (under the pipeline's lock: keep it short) when an item's bytes are released, e.g. to
    /// return its buffer to a pool.</param>
    public OrderedPipeline(IReadOnlyList<T> items, Func<T, ReadOnlyMemory<byte>> produce, Func<T, long> cost, long budgetBytes,
        int parallelism, Action<T>? consumed = null)
    {
        _consumed = consumed;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budgetBytes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(parallelism);
        (_items, _produce, _cost, _budget, _parallelism) = (items, produce, cost, budgetBytes, parallelism);
        _tasks = new Task<ReadOnlyMemory<byte>>?[items.Count];
        lock (_lock) Pump();
    }

    public int Count => _items.Count;

    /// <summary>Item <paramref name="index"/>'s bytes; items are taken in order 0, 1, 2...; the previous item's bytes are
    /// released (no longer counted, and must no longer be used).</summary>
    public ReadOnlyMemory<byte> Take(int index)
    {
        Task<ReadOnlyMemory<byte>> task;
        lock (_lock)
        {
            if (index != _next) throw new InvalidOperationException($"item {index} taken out of order; expected {_next}");
            Release();
            _next = index + 1;
            Pump();
            task = _tasks[index] ?? throw new InvalidOperationException($"item {index} was not started (an earlier item failed)");
        }
        return task.GetAwaiter().GetResult();
    }

    public void Dispose()
    {
        Task[] all;
        lock (_lock)
        {
            _failed = true; // starts nothing more
            Release();
            all = [.. _tasks.OfType<Task>()]; // the consumed ones are done and dropped (their bytes are free to go)
        }
        try
        {
            Task.WaitAll(all);
        }
        catch (AggregateException)
        {
            // Already surfaced by Take, or belongs to an item nobody asked for.
        }
    }

    // Under _lock: the item before _next is consumed.
    private void Release()
    {
        int done = _next - 1;
        if (done < 0 || _tasks[done] is null) return;
        _held -= _cost(_items[done]);
        if (_tasks[done]!.IsCompletedSuccessfully) _consumed?.Invoke(_items[done]);
        _tasks[done] = null;
    }

    // Under _lock: start items in order while a producer slot and the budget allow; the item the consumer waits for
    // (index _next - 1) always may start.
    private void Pump()
    {
        while (!_failed && _started < _items.Count && _running < _parallelism
               && (_held + _cost(_items[_started]) <= _budget || _started < _next))
        {
            int k = _started++;
            _held += _cost(_items[k]);
            _running++;
            // The slot is given back inside the task, before it completes: by the time the consumer holds item k, the items
            // after it that fit have been started.
            var task = Task.Run(() =>
            {
                bool ok = false;
                try
                {
                    var bytes = _produce(_items[k]);
                    ok = true;
                    return bytes;
                }
                finally
                {
                    lock (_lock)
                    {
                        _running--;
                        if (!ok) _failed = true;
                        Pump();
                    }
                }
            });
            _tasks[k] = task;
        }
    }
}
