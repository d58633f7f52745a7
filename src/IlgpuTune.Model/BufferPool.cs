using System.Collections.Concurrent;

namespace IlgpuTune.Model;

/// <summary>
/// Arrays of exact lengths kept for reuse by the streamed conversions (the tensors of a model come in a few sizes): a fresh
/// 100 MB array costs its page faults and zeroing on every tensor, a reused one neither. At most
/// <paramref name="maxRetainedBytes"/> are kept; beyond that a returned array is left to the GC. Thread-safe.
/// </summary>
internal sealed class BufferPool<T>(long maxRetainedBytes) where T : unmanaged
{
    private readonly ConcurrentDictionary<long, ConcurrentBag<T[]>> _free = new();
    private long _retained;

    /// <summary>An array of exactly <paramref name="length"/> elements, contents undefined.</summary>
    public T[] Rent(long length)
    {
        if (_free.TryGetValue(length, out var bag) && bag.TryTake(out var array))
        {
            Interlocked.Add(ref _retained, -Bytes(array));
            return array;
        }
        return GC.AllocateUninitializedArray<T>(checked((int)length));
    }

    public void Return(T[] array)
    {
        long bytes = Bytes(array);
        if (Interlocked.Add(ref _retained, bytes) > maxRetainedBytes)
        {
            Interlocked.Add(ref _retained, -bytes);
            return;
        }
        _free.GetOrAdd(array.LongLength, _ => []).Add(array);
    }

    /// <summary>Lets every kept array go.</summary>
    public void Clear()
    {
        _free.Clear();
        Interlocked.Exchange(ref _retained, 0);
    }

    private static unsafe long Bytes(T[] array) => array.LongLength * sizeof(T);
}
