// What an op backend over the driver needs from a GPU: device memory, copies, and launches of precompiled kernels by name.
// DriverDevice is the real one; tests put a recorder here that checks every launch against the PTX library without a GPU.
namespace IlgpuTune.Driver;

/// <summary>A grid or group size in CUDA's three dimensions.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public ulong Volume => (ulong)X * Y * Z;

    public override string ToString() => $"({X}, {Y}, {Z})";
}

public interface IDriverRuntime : IDisposable
{
    /// <summary>The GPU's name.</summary>
    string Name { get; }

    /// <summary>Compute capability.</summary>
    int Major { get; }

    int Minor { get; }

    /// <summary>"sm_80" or "sm_90": the precompiled PTX this device loads.</summary>
    string Architecture { get; }

    int Multiprocessors { get; }

    /// <summary>Bytes of shared memory one group may opt in to.</summary>
    int SharedMemoryPerGroup { get; }

    CachingDeviceAllocator Allocator { get; }

    /// <summary>The manifest entry of kernel <paramref name="name"/> (parameter layout); throws when it is not precompiled here.</summary>
    PtxEntry Entry(string name);

    /// <summary>The group size ILGPU gives an implicitly grouped kernel (occupancy-derived).</summary>
    int GroupSize(string name);

    /// <summary>Enqueues kernel <paramref name="name"/> on the default stream (the shared-memory limit raised when needed).</summary>
    void Launch(string name, Dim3 grid, Dim3 group, int sharedBytes, KernelArguments arguments);

    void CopyToDevice(ReadOnlySpan<byte> source, ulong destination);

    void CopyFromDevice(ulong source, Span<byte> destination);

    void Copy(ulong source, ulong destination, long bytes);

    void Zero(ulong destination, long bytes);

    void Synchronize();
}
