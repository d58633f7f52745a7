// Size-bucketed caching allocator (like PyTorch's): freed blocks go to a free list keyed by their rounded size and are
// handed out again, so a training step in steady state never calls the driver allocator. Counters follow torch.cuda:
// allocated = bytes held by live tensors, reserved = allocated + cached, peak = max allocated.
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Core;

public sealed class Block
{
    internal Block(long bytes, byte[]? host, MemoryBuffer1D<byte, Stride1D.Dense>? device, ulong pointer = 0)
    {
        Bytes = bytes;
        Host = host;
        Buffer = device;
        Pointer = pointer;
    }

    /// <summary>Storage on a GPU opened through the driver runtime (DriverBackend): its device address, else 0.</summary>
    public ulong Pointer { get; }

    /// <summary>Rounded (bucket) size in bytes.</summary>
    public long Bytes { get; }

    /// <summary>Storage on the managed CPU path.</summary>
    public byte[]? Host { get; }

    /// <summary>Storage on an ILGPU accelerator.</summary>
    public MemoryBuffer1D<byte, Stride1D.Dense>? Buffer { get; }

    /// <summary>Host memory the allocator does not own (a view of a memory-mapped weights file): disposed, not cached,
    /// when its tensors are gone.</summary>
    public System.Buffers.MemoryManager<byte>? External { get; private init; }

    internal static Block Wrap(System.Buffers.MemoryManager<byte> memory) =>
        new(memory.Memory.Length, null, null) { External = memory };
}

public sealed class CachingAllocator : IDisposable
{
    private readonly Accelerator? _accelerator;
    private readonly IlgpuTune.Driver.IDriverRuntime? _driver;
    private readonly Dictionary<long, Stack<Block>> _free = new();
    private readonly Lock _lock = new();

    public CachingAllocator(Accelerator? accelerator) => _accelerator = accelerator;

    /// <summary>Blocks of device memory from the driver runtime's allocator.</summary>
    public CachingAllocator(IlgpuTune.Driver.IDriverRuntime driver) => _driver = driver;

    public long AllocatedBytes { get; private set; }
    public long ReservedBytes { get; private set; }
    public long PeakAllocatedBytes { get; private set; }

    /// <summary>Number of times the underlying allocator (driver or GC) was called.</summary>
    public long BackendAllocations { get; private set; }

    /// <summary>
    /// Bucket size: ≤512 B → 512; below 1 MiB, rounded up to a quarter of its power of two (waste ≤ 25%); from 1 MiB, to a
    /// 32nd (waste ≤ 3%), so the large weights and activations that make up the footprint are held at nearly their size
    /// (an 11008 × 4096 bf16 weight is 86 MiB: 96 MiB in quarter steps, 86 MiB here).
    /// </summary>
    public static long RoundSize(long bytes)
    {
        if (bytes <= 512) return 512;
        long p = 1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)bytes));
        long step = Math.Max(512, p < 1 << 20 ? p / 4 : p / 32);
        return (bytes + step - 1) / step * step;
    }

    public Block Rent(long bytes)
    {
        long size = RoundSize(bytes);
        lock (_lock)
        {
            if (!_free.TryGetValue(size, out var stack) || !stack.TryPop(out var block))
            {
                try
                {
                    block = Allocate(size);
                }
                catch (Exception e) when (e is OutOfMemoryException or ILGPU.Runtime.Cuda.CudaException or IlgpuTune.Driver.CudaDriverException
                                          && _free.Count > 0)
                {
                    // Free blocks of other sizes are cached: hand them back and try once more (as torch's allocator does).
                    EmptyCacheLocked();
                    block = Allocate(size);
                }
                BackendAllocations++;
                ReservedBytes += size;
            }
            AllocatedBytes += size;
            PeakAllocatedBytes = Math.Max(PeakAllocatedBytes, AllocatedBytes);
            return block;
        }
    }

    public void Return(Block block)
    {
        lock (_lock)
        {
            AllocatedBytes -= block.Bytes;
            if (!_free.TryGetValue(block.Bytes, out var stack)) _free[block.Bytes] = stack = new Stack<Block>();
            stack.Push(block);
        }
    }

    /// <summary>
    /// Counts device memory allocated outside the cache (optimizer state, kernel workspaces) in AllocatedBytes and the
    /// peak, so the reported peak is all the device memory the engine holds; negative when it is freed.
    /// </summary>
    public void TrackExternal(long bytes)
    {
        lock (_lock)
        {
            AllocatedBytes += bytes;
            PeakAllocatedBytes = Math.Max(PeakAllocatedBytes, AllocatedBytes);
        }
    }

    public void ResetPeak()
    {
        lock (_lock) PeakAllocatedBytes = AllocatedBytes;
    }

    private Block Allocate(long size) => _driver is not null ? new Block(size, null, null, _driver.Allocator.Rent(size))
        : _accelerator is null
        ? new Block(size, GC.AllocateUninitializedArray<byte>(checked((int)size)), null)
        : new Block(size, null, _accelerator.Allocate1D<byte>(size));

    /// <summary>Releases every cached (free) block back to the driver / GC.</summary>
    public void EmptyCache()
    {
        lock (_lock) EmptyCacheLocked();
    }

    private void EmptyCacheLocked()
    {
        foreach (var stack in _free.Values)
            while (stack.TryPop(out var b))
            {
                ReservedBytes -= b.Bytes;
                b.Buffer?.Dispose();
                if (b.Pointer != 0) _driver!.Allocator.Return(b.Pointer);
            }
        _free.Clear();
        _driver?.Allocator.ReleaseCached();
    }

    public void Dispose() => EmptyCache();
}
