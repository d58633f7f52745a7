// Device memory reuse for the driver runtime (as Core's CachingAllocator does for ILGPU buffers): cuMemAlloc/cuMemFree
// synchronise and cost tens of microseconds, so freed blocks are kept by rounded size and handed out again. Rounding: 512 B
// granules up to 1 MiB, then 2 MiB granules (few distinct sizes, little waste). On out-of-memory the cache is released and
// the allocation retried once.
namespace IlgpuTune.Driver;

public sealed class CachingDeviceAllocator(Func<long, ulong> allocate, Action<ulong> free) : IDisposable
{
    private readonly Dictionary<long, Stack<ulong>> _free = new();
    private readonly Dictionary<ulong, long> _live = new();
    private readonly object _lock = new();

    /// <summary>Bytes held from the driver (in use + cached).</summary>
    public long Reserved { get; private set; }

    /// <summary>Bytes handed out and not yet returned.</summary>
    public long InUse { get; private set; }

    public static long Round(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        const long small = 512, large = 2 << 20;
        return bytes <= 1 << 20 ? (bytes + small - 1) / small * small : (bytes + large - 1) / large * large;
    }

    /// <summary>A device block of at least <paramref name="bytes"/> bytes.</summary>
    public ulong Rent(long bytes)
    {
        long size = Round(bytes);
        lock (_lock)
        {
            if (!(_free.TryGetValue(size, out var stack) && stack.TryPop(out ulong pointer)))
            {
                try
                {
                    pointer = allocate(size);
                }
                catch (CudaDriverException e) when (e.Error == CudaDriverException.OutOfMemory)
                {
                    ReleaseCached();
                    pointer = allocate(size);
                }
                Reserved += size;
            }
            _live[pointer] = size;
            InUse += size;
            return pointer;
        }
    }

    /// <summary>Returns a block from <see cref="Rent"/> to the cache.</summary>
    public void Return(ulong pointer)
    {
        lock (_lock)
        {
            if (!_live.Remove(pointer, out long size))
                throw new InvalidOperationException($"device pointer 0x{pointer:x} was not rented from this allocator (or returned twice)");
            InUse -= size;
            if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new();
            stack.Push(pointer);
        }
    }

    /// <summary>Frees every cached (unused) block.</summary>
    public void ReleaseCached()
    {
        lock (_lock)
        {
            foreach (var (size, stack) in _free)
                while (stack.TryPop(out ulong pointer))
                {
                    free(pointer);
                    Reserved -= size;
                }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            ReleaseCached();
            foreach (var (pointer, size) in _live)
            {
                free(pointer);
                Reserved -= size;
            }
            _live.Clear();
            InUse = 0;
        }
    }
}
