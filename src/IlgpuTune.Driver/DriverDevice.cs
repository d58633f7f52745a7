// One GPU through the CUDA driver API alone: its primary context, a caching allocator, streams, events, and the kernels
// of a PtxLibrary loaded with cuModuleLoadDataEx and launched with cuLaunchKernel. No ILGPU Context is created, so this
// runs in Native AOT apps. Opening it is where a missing or too-old driver is reported, in one sentence.
using System.Runtime.InteropServices;
using System.Text;

namespace IlgpuTune.Driver;

public sealed class DriverDevice : IDriverRuntime
{
    // CUdevice_attribute / CUfunction_attribute / CUjit_option values used here.
    private const int ComputeCapabilityMajor = 75, ComputeCapabilityMinor = 76, MaxDynamicSharedSizeBytes = 8;
    private const int MultiprocessorCount = 16, MaxSharedMemoryPerBlockOptin = 97, DefaultSharedLimit = 48 * 1024;
    private const int JitErrorLogBuffer = 5, JitErrorLogBufferSize = 6;

    private readonly int _device;
    private readonly IntPtr _context;
    private readonly Dictionary<string, DriverKernel> _kernels = new(StringComparer.Ordinal);
    private readonly List<IntPtr> _modules = [];
    private readonly Dictionary<string, int> _sharedLimits = new(StringComparer.Ordinal);
    private bool _disposed;

    private DriverDevice(int device, IntPtr context, int driverVersion, int major, int minor, string name, PtxLibrary library)
    {
        (_device, _context, DriverVersion, Major, Minor, Name, Library) = (device, context, driverVersion, major, minor, name, library);
        Allocator = new CachingDeviceAllocator(bytes =>
        {
            Bind();
            CudaDriverException.Check(CudaApi.MemAlloc(out ulong p, (nuint)bytes), $"cuMemAlloc({bytes} B)");
            return p;
        }, p => CudaApi.MemFree(p));
    }

    /// <summary>The driver's CUDA version as cuDriverGetVersion gives it (12040 = 12.4).</summary>
    public int DriverVersion { get; }

    public int Major { get; }

    public int Minor { get; }

    public string Name { get; }

    public int Multiprocessors { get; private init; }

    public int SharedMemoryPerGroup { get; private init; }

    /// <summary>"sm_80" or "sm_90": the precompiled PTX this device loads.</summary>
    public string Architecture => Major == 9 && Minor == 0 ? "sm_90" : "sm_80";

    public PtxLibrary Library { get; }

    public CachingDeviceAllocator Allocator { get; }

    /// <summary>
    /// Opens GPU <paramref name="ordinal"/> for the kernels of <paramref name="library"/>, whose PTX needs a driver of at least
    /// <paramref name="minimumDriver"/> (cuDriverGetVersion's number). Throws <see cref="CudaDriverUnavailableException"/>
    /// when the driver library is missing, has no GPU, or is too old, and for GPUs below compute capability 8.0.
    /// </summary>
    public static DriverDevice Open(PtxLibrary library, int minimumDriver, int ordinal = 0)
    {
        int version;
        try
        {
            int rc = CudaApi.Init(0);
            if (rc == CudaDriverException.NoDevice) throw new CudaDriverUnavailableException("the NVIDIA driver reports no CUDA GPU");
            CudaDriverException.Check(rc, "cuInit");
            CudaDriverException.Check(CudaApi.DriverGetVersion(out version), "cuDriverGetVersion");
        }
        catch (DllNotFoundException e)
        {
            throw new CudaDriverUnavailableException($"the NVIDIA driver is not installed ({CudaApi.LibraryFile} not found); " +
                "install the NVIDIA driver, or run on the CPU", e);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new CudaDriverUnavailableException($"{CudaApi.LibraryFile} lacks {e.Message}: the NVIDIA driver is too old", e);
        }
        if (version < minimumDriver)
            throw new CudaDriverUnavailableException($"the NVIDIA driver supports CUDA {Version(version)}; the precompiled kernels need " +
                $"CUDA {Version(minimumDriver)} or later (update the driver)");
        CudaDriverException.Check(CudaApi.DeviceGetCount(out int count), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= count) throw new CudaDriverUnavailableException($"no CUDA GPU {ordinal}: the driver reports {count}");
        CudaDriverException.Check(CudaApi.DeviceGet(out int device, ordinal), "cuDeviceGet");
        CudaDriverException.Check(CudaApi.DeviceGetAttribute(out int major, ComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        CudaDriverException.Check(CudaApi.DeviceGetAttribute(out int minor, ComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        string name = DeviceName(device);
        if (major < 8)
            throw new CudaDriverUnavailableException($"{name} has compute capability {major}.{minor}; the precompiled kernels need 8.0 or later");
        CudaDriverException.Check(CudaApi.PrimaryCtxRetain(out var context, device), "cuDevicePrimaryCtxRetain");
        CudaDriverException.Check(CudaApi.CtxSetCurrent(context), "cuCtxSetCurrent");
        CudaDriverException.Check(CudaApi.DeviceGetAttribute(out int sms, MultiprocessorCount, device), "cuDeviceGetAttribute");
        CudaDriverException.Check(CudaApi.DeviceGetAttribute(out int shared, MaxSharedMemoryPerBlockOptin, device), "cuDeviceGetAttribute");
        return new DriverDevice(device, context, version, major, minor, name, library) { Multiprocessors = sms, SharedMemoryPerGroup = shared };
    }

    internal static string Version(int version) => $"{version / 1000}.{version % 1000 / 10}";

    private static unsafe string DeviceName(int device)
    {
        byte* buffer = stackalloc byte[256];
        CudaDriverException.Check(CudaApi.DeviceGetName(buffer, 256, device), "cuDeviceGetName");
        return Marshal.PtrToStringUTF8((nint)buffer) ?? "CUDA GPU";
    }

    /// <summary>Makes this device's context current on the calling thread.</summary>
    public void Bind() => CudaDriverException.Check(CudaApi.CtxSetCurrent(_context), "cuCtxSetCurrent");

    /// <summary>The kernel <paramref name="name"/>, loaded from the library on first use.</summary>
    public DriverKernel Kernel(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_kernels)
        {
            if (_kernels.TryGetValue(name, out var loaded)) return loaded;
            var entry = Library.Find(Architecture, name)
                ?? throw new KeyNotFoundException($"kernel {name} is not precompiled for {Architecture} in {Library.Source}");
            var module = LoadModule(Library.Text(entry), entry);
            _modules.Add(module);
            CudaDriverException.Check(CudaApi.ModuleGetFunction(out var function, module, entry.Entry), $"cuModuleGetFunction({entry.Entry})");
            return _kernels[name] = new DriverKernel(entry, function);
        }
    }

    private unsafe IntPtr LoadModule(string ptx, PtxEntry entry)
    {
        Bind();
        var image = Encoding.UTF8.GetBytes(ptx + "\0");
        const int logSize = 16 * 1024;
        var log = new byte[logSize];
        fixed (byte* p = image, l = log)
        {
            int* options = stackalloc int[] { JitErrorLogBuffer, JitErrorLogBufferSize };
            void** values = stackalloc void*[] { l, (void*)logSize };
            int rc = CudaApi.ModuleLoadDataEx(out var module, p, 2, options, values);
            if (rc == 0) return module;
            string jit = Encoding.UTF8.GetString(log).TrimEnd('\0').Trim();
            throw rc == CudaDriverException.UnsupportedPtxVersion
                ? new CudaDriverUnavailableException($"the NVIDIA driver (CUDA {Version(DriverVersion)}) cannot read kernel {entry.Name}'s PTX " +
                    "(too new a PTX ISA version); update the driver")
                : new CudaDriverException($"cuModuleLoadDataEx({entry.Name}, {entry.Architecture}) failed: {CudaDriverException.Name(rc)} ({rc})" +
                    (jit.Length > 0 ? $": {jit}" : ""), rc);
        }
    }

    /// <summary>Lets <paramref name="kernel"/> take <paramref name="bytes"/> of dynamic shared memory (past the default 48 KB).</summary>
    public void RaiseSharedMemory(DriverKernel kernel, int bytes) =>
        CudaDriverException.Check(CudaApi.FuncSetAttribute(kernel.Function, MaxDynamicSharedSizeBytes, bytes), $"cuFuncSetAttribute({kernel.Name}, {bytes} B)");

    /// <summary>Enqueues <paramref name="kernel"/> on <paramref name="stream"/> (null: the default stream).</summary>
    public unsafe void Launch(DriverKernel kernel, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, int sharedBytes,
        KernelArguments arguments, DriverStream? stream = null)
    {
        Bind();
        arguments.Pinned(parameters => CudaDriverException.Check(CudaApi.LaunchKernel(kernel.Function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z,
            (uint)sharedBytes, stream?.Handle ?? IntPtr.Zero, (void**)parameters, null), $"cuLaunchKernel({kernel.Name})"));
    }

    public PtxEntry Entry(string name) => Kernel(name).Entry;

    public int GroupSize(string name) => GroupSize(Kernel(name));

    public void Launch(string name, Dim3 grid, Dim3 group, int sharedBytes, KernelArguments arguments)
    {
        var kernel = Kernel(name);
        if (sharedBytes > DefaultSharedLimit)
            lock (_sharedLimits)
                if (_sharedLimits.GetValueOrDefault(name) < sharedBytes)
                {
                    RaiseSharedMemory(kernel, sharedBytes);
                    _sharedLimits[name] = sharedBytes;
                }
        Launch(kernel, (grid.X, grid.Y, grid.Z), (group.X, group.Y, group.Z), sharedBytes, arguments);
    }

    public void CopyToDevice(ReadOnlySpan<byte> source, ulong destination) => CopyToDevice<byte>(source, destination);

    public void CopyFromDevice(ulong source, Span<byte> destination) => CopyFromDevice<byte>(source, destination);

    public void Copy(ulong source, ulong destination, long bytes)
    {
        Bind();
        Copy(source, destination, bytes, null);
    }

    public void Zero(ulong destination, long bytes)
    {
        Bind();
        Zero(destination, bytes, null);
    }

    public void Synchronize()
    {
        Bind();
        Synchronize(null);
    }

    /// <summary>The occupancy-derived group size of a kernel ILGPU groups implicitly.</summary>
    public int GroupSize(DriverKernel kernel)
    {
        CudaDriverException.Check(CudaApi.OccupancyMaxPotentialBlockSize(out _, out int block, kernel.Function, IntPtr.Zero, 0, 0),
            $"cuOccupancyMaxPotentialBlockSize({kernel.Name})");
        return block;
    }

    public unsafe void CopyToDevice<T>(ReadOnlySpan<T> source, ulong destination, DriverStream? stream = null) where T : unmanaged
    {
        Bind();
        fixed (T* p = source)
            CudaDriverException.Check(CudaApi.MemcpyHtoDAsync(destination, p, (nuint)(source.Length * sizeof(T)), stream?.Handle ?? IntPtr.Zero), "cuMemcpyHtoDAsync");
        Synchronize(stream); // the source span may go away when this returns
    }

    public unsafe void CopyFromDevice<T>(ulong source, Span<T> destination, DriverStream? stream = null) where T : unmanaged
    {
        Bind();
        fixed (T* p = destination)
            CudaDriverException.Check(CudaApi.MemcpyDtoHAsync(p, source, (nuint)(destination.Length * sizeof(T)), stream?.Handle ?? IntPtr.Zero), "cuMemcpyDtoHAsync");
        Synchronize(stream);
    }

    public void Copy(ulong source, ulong destination, long bytes, DriverStream? stream = null) =>
        CudaDriverException.Check(CudaApi.MemcpyDtoDAsync(destination, source, (nuint)bytes, stream?.Handle ?? IntPtr.Zero), "cuMemcpyDtoDAsync");

    public void Zero(ulong destination, long bytes, DriverStream? stream = null) =>
        CudaDriverException.Check(CudaApi.MemsetD8Async(destination, 0, (nuint)bytes, stream?.Handle ?? IntPtr.Zero), "cuMemsetD8Async");

    public void Synchronize(DriverStream? stream = null) =>
        CudaDriverException.Check(stream is null ? CudaApi.CtxSynchronize() : CudaApi.StreamSynchronize(stream.Handle), "synchronize");

    public DriverStream CreateStream()
    {
        Bind();
        CudaDriverException.Check(CudaApi.StreamCreate(out var stream, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
        return new DriverStream(stream);
    }

    public DriverEvent CreateEvent()
    {
        Bind();
        CudaDriverException.Check(CudaApi.EventCreate(out var e, 0), "cuEventCreate");
        return new DriverEvent(e);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Bind();
        CudaApi.CtxSynchronize();
        Allocator.Dispose();
        foreach (var module in _modules) CudaApi.ModuleUnload(module);
        _modules.Clear();
        _kernels.Clear();
        CudaApi.PrimaryCtxRelease(_device);
    }
}

/// <summary>A loaded kernel: its manifest entry (parameter layout, grouping) and the CUfunction.</summary>
public sealed class DriverKernel(PtxEntry entry, IntPtr function)
{
    public PtxEntry Entry { get; } = entry;
    public string Name => Entry.Name;
    internal IntPtr Function { get; } = function;

    /// <summary>A fresh argument pack for one launch of this kernel.</summary>
    public KernelArguments Arguments() => new(Name, Entry.Parameters);
}

public sealed class DriverStream(IntPtr handle) : IDisposable
{
    internal IntPtr Handle { get; private set; } = handle;

    /// <summary>Work enqueued on this stream from now on waits for <paramref name="e"/>'s last record.</summary>
    public void Wait(DriverEvent e) => CudaDriverException.Check(CudaApi.StreamWaitEvent(Handle, e.Handle, 0), "cuStreamWaitEvent");

    public void Dispose()
    {
        if (Handle != IntPtr.Zero) CudaApi.StreamDestroy(Handle);
        Handle = IntPtr.Zero;
    }
}

public sealed class DriverEvent(IntPtr handle) : IDisposable
{
    internal IntPtr Handle { get; private set; } = handle;

    public void Record(DriverStream? stream = null) =>
        CudaDriverException.Check(CudaApi.EventRecord(Handle, stream?.Handle ?? IntPtr.Zero), "cuEventRecord");

    public void Synchronize() => CudaDriverException.Check(CudaApi.EventSynchronize(Handle), "cuEventSynchronize");

    /// <summary>Milliseconds from <paramref name="start"/>'s record to this one's.</summary>
    public float Since(DriverEvent start)
    {
        CudaDriverException.Check(CudaApi.EventElapsedTime(out float ms, start.Handle, Handle), "cuEventElapsedTime");
        return ms;
    }

    public void Dispose()
    {
        if (Handle != IntPtr.Zero) CudaApi.EventDestroy(Handle);
        Handle = IntPtr.Zero;
    }
}
