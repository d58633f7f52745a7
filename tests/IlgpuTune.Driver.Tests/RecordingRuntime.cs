using IlgpuTune.Kernels;
using IlgpuTune.Kernels.Ptx;

namespace IlgpuTune.Driver.Tests;

/// <summary>
/// A GPU that is not there: device memory is fake 256-byte-aligned addresses, copies do nothing, and every launch is
/// checked and recorded: the kernel is precompiled for this architecture (and for sm_80 and sm_90 unless it is an sm_90a
/// kernel), every parameter of its PTX entry was given with its size (KernelArguments checks each), grid and group are
/// within CUDA's limits, dynamic shared memory only for kernels that declare it, as much as the declaration says, within
/// the GPU's opt-in limit.
/// </summary>
sealed class RecordingRuntime(string architecture) : IDriverRuntime
{
    public sealed record Launched(string Kernel, Dim3 Grid, Dim3 Group, int SharedBytes, KernelArguments Arguments);

    ulong _next = 0x7f00_0000_0000;

    public List<Launched> Launches { get; } = [];

    public string Name => $"recording {architecture}";
    public int Major => architecture == "sm_90" ? 9 : 8;
    public int Minor => 0;
    public string Architecture => architecture;
    public int Multiprocessors => 132;
    public int SharedMemoryPerGroup => architecture == "sm_90" ? 227 * 1024 : 163 * 1024;

    public CachingDeviceAllocator Allocator => field ??= new(bytes =>
    {
        ulong p = _next;
        _next += (ulong)(bytes + 255) / 256 * 256;
        return p;
    }, _ => { });

    public PtxEntry Entry(string name) => PrecompiledPtx.Library.Find(architecture, name)
        ?? throw new KeyNotFoundException($"kernel {name} is not precompiled for {architecture}");

    public int GroupSize(string name)
    {
        Assert.True(Entry(name).ImplicitlyGrouped, $"{name}: GroupSize asked for an explicitly grouped kernel");
        return 768;
    }

    public void Launch(string name, Dim3 grid, Dim3 group, int sharedBytes, KernelArguments arguments)
    {
        var entry = Entry(name);
        Assert.Equal(entry.Parameters.Count, arguments.Count);
        if (entry.Target != nameof(KernelTarget.Sm90a))
            foreach (var arch in (string[])["sm_80", "sm_90"])
                Assert.True(PrecompiledPtx.Library.Find(arch, name) is not null, $"{name} is not precompiled for {arch}");
        else Assert.Equal("sm_90", architecture);
        Assert.InRange(grid.X, 1u, (uint)int.MaxValue);
        Assert.InRange(grid.Y, 1u, 65535u);
        Assert.InRange(grid.Z, 1u, 65535u);
        Assert.InRange(group.X, 1u, 1024u);
        Assert.InRange(group.Y, 1u, 1024u);
        Assert.InRange(group.Z, 1u, 64u);
        Assert.InRange(group.Volume, 1ul, 1024ul);
        Assert.True(sharedBytes == 0 || entry.DynamicShared, $"{name} gets {sharedBytes} B of dynamic shared memory but declares none");
        Assert.InRange(sharedBytes + entry.StaticShared, 0, SharedMemoryPerGroup);
        var declared = KernelCatalogue.Cuda.Single(k => k.Name == name).SharedBytes;
        if (declared > 0) Assert.Equal(declared, sharedBytes);
        Launches.Add(new(name, grid, group, sharedBytes, arguments));
    }

    public void CopyToDevice(ReadOnlySpan<byte> source, ulong destination) => Assert.NotEqual(0ul, destination);
    public void CopyFromDevice(ulong source, Span<byte> destination) => destination.Clear();
    public void Copy(ulong source, ulong destination, long bytes) => Assert.True(source != 0 && destination != 0 && bytes > 0);
    public void Zero(ulong destination, long bytes) => Assert.NotEqual(0ul, destination);
    public void Synchronize() { }
    public void Dispose() { }
}
