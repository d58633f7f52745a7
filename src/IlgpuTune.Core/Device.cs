// The compute device: one object owning an ILGPU Context + Accelerator (or none, for the managed CPU path),
// the kernel registry, the caching allocator, its capabilities (DeviceCaps) and its op backend, both decided here once.
// Nothing above Core asks which kind of device it runs on. ILGPUTUNE_DEVICE=cuda|cpu|ilgpu-cpu|driver forces a kind.
// In a Native AOT process (no ILGPU Context) CUDA is the driver runtime: precompiled PTX through the driver API (DriverBackend).
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Driver;
using IlgpuTune.Kernels;

namespace IlgpuTune.Core;

public enum DeviceKind
{
    /// <summary>Managed CPU path: the CPU reference implementations (TensorPrimitives + Parallel.For).</summary>
    Cpu,
    /// <summary>NVIDIA GPU: through ILGPU's CUDA backend, or (Native AOT, or asked for as "driver") the driver runtime.</summary>
    Cuda,
    /// <summary>ILGPU's CPU accelerator (Nvidia kind, warp 32): runs the GPU kernels in an emulator, for tests.</summary>
    IlgpuCpu,
}

public sealed class Device : IDisposable
{
    public const string EnvironmentVariable = "ILGPUTUNE_DEVICE";

    private readonly Context? _context;

    private Device(DeviceKind kind, Context? context, Accelerator? accelerator)
    {
        Kind = kind;
        _context = context;
        Accelerator = accelerator;
        Allocator = new CachingAllocator(accelerator);
        Kernels = accelerator is null || !RuntimeFeature.IsDynamicCodeSupported ? null : new KernelRegistry(accelerator, loader: PrecompiledKernelLoader.For(() => IlgpuTune.Kernels.Ptx.PrecompiledPtx.Library));
        if (Kernels is not null) Kernels.WorkspaceResized = Allocator.TrackExternal;
        Caps = Kernels is null || !RuntimeFeature.IsDynamicCodeSupported ? DeviceCaps.ManagedCpu : DeviceCaps.Of(Kernels);
        Backend = Kernels is null || !RuntimeFeature.IsDynamicCodeSupported ? new ManagedCpuBackend() : new IlgpuBackend(this, Kernels);
    }

    // The driver runtime's GPU: precompiled PTX launched through the CUDA driver API, no ILGPU Context (Native AOT).
    private Device(IDriverRuntime driver)
    {
        Kind = DeviceKind.Cuda;
        Driver = driver;
        Allocator = new CachingAllocator(driver);
        Caps = new DeviceCaps(false, LaunchTarget.GpuRowGroupSize, (driver.Major, driver.Minor), driver.Major == 9 && driver.Minor == 0,
            driver.SharedMemoryPerGroup, HalfMatmuls: true);
        Backend = new DriverBackend(this, driver);
    }

    /// <summary>A device over an opened driver runtime (a GPU, or a recording runtime in tests); it owns the runtime.</summary>
    public static Device FromDriver(IDriverRuntime driver) => new(driver);

    public DeviceKind Kind { get; }

    /// <summary>The driver runtime when this GPU runs precompiled PTX without ILGPU; else null.</summary>
    public IDriverRuntime? Driver { get; }

    /// <summary>What this device can do, computed once.</summary>
    public DeviceCaps Caps { get; }

    /// <summary>Every op's forward and backward on this device: the CPU references or the ILGPU kernels.</summary>
    public IOpBackend Backend { get; }

    public Accelerator? Accelerator { get; }

    public KernelRegistry? Kernels { get; }

    public CachingAllocator Allocator { get; }

    /// <summary>
    /// The precision asked for linear-layer products and attention (torch's autocast for matmuls). Activations, norms,
    /// softmax, loss and parameter updates stay fp32 in every mode. See <see cref="Matmuls"/> for the one in effect.
    /// </summary>
    public Precision Precision { get; set; } = Precision.F32;

    /// <summary>The precision in effect: <see cref="Precision"/> where 16-bit kernels exist, fp32 on the managed CPU path.</summary>
    public Precision Matmuls => Caps.HalfMatmuls ? Precision : Precision.F32;

    /// <summary>
    /// Sets the precision a training config asks for where it pays: tensor cores of a real GPU. The managed CPU path and
    /// the emulator train in fp32.
    /// </summary>
    public void UseTrainingPrecision(Precision precision) => Precision = Caps.HalfMatmuls && !Caps.Emulated ? precision : Precision.F32;

    public string Name => Driver is not null ? $"{Driver.Name} (driver runtime)" : Accelerator?.Name ?? $"managed CPU ({Environment.ProcessorCount} threads)";

    /// <summary>
    /// Creates the device named by <paramref name="kind"/> ("cuda", "cpu", "ilgpu-cpu", "driver", or null/"auto": CUDA when a
    /// GPU is present, else the managed CPU path). Without an argument, ILGPUTUNE_DEVICE decides. <paramref name="cudaOrdinal"/>
    /// picks the GPU (a multi-GPU job's LOCAL_RANK). "driver" is CUDA through the driver runtime (precompiled PTX, no ILGPU),
    /// which is what "cuda" is in a Native AOT app.
    /// </summary>
    public static Device Create(string? kind = null, int cudaOrdinal = 0)
    {
        kind ??= Environment.GetEnvironmentVariable(EnvironmentVariable);
        // Native AOT: ILGPU compiles kernels with Reflection.Emit, so its Context cannot exist there; CUDA goes through the
        // driver runtime (the constant-false check lets the AOT compiler drop the ILGPU paths entirely).
        if (!RuntimeFeature.IsDynamicCodeSupported)
            return kind?.Trim().ToLowerInvariant() switch
            {
                null or "" or "auto" => TryOpenDriver(cudaOrdinal) ?? new Device(DeviceKind.Cpu, null, null),
                "cpu" => new Device(DeviceKind.Cpu, null, null),
                "cuda" or "driver" => OpenDriver(cudaOrdinal),
                "ilgpu-cpu" => throw new NotSupportedException("device 'ilgpu-cpu' needs ILGPU, which does not run in a Native AOT app; use cuda, cpu or auto"),
                _ => throw new ArgumentException($"unknown device '{kind}': expected cuda, cpu or auto"),
            };
        switch (kind?.Trim().ToLowerInvariant())
        {
            case "driver":
                return OpenDriver(cudaOrdinal);
            case null or "" or "auto":
                return TryCreateCuda(cudaOrdinal) ?? new Device(DeviceKind.Cpu, null, null);
            case "cpu":
                return new Device(DeviceKind.Cpu, null, null);
            case "cuda":
                return TryCreateCuda(cudaOrdinal) ?? throw new InvalidOperationException(
                    $"{EnvironmentVariable}=cuda but no CUDA device was found (is the NVIDIA driver installed?)");
            case "ilgpu-cpu":
                // The emulator's kernels are compiled at O0 with conservative inlining: the same semantics, compiled ~15x faster
                // (a tiny test is all compile time at O1 with every call inlined), run a few times slower.
                var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).EnableAlgorithms()
                    .Optimize(OptimizationLevel.O0).Inlining(InliningMode.Conservative));
                return new Device(DeviceKind.IlgpuCpu, context, context.GetCPUDevice(0).CreateAccelerator(context));
            default:
                throw new ArgumentException($"unknown device '{kind}': expected cuda, cpu, ilgpu-cpu, driver or auto");
        }
    }

    private static Device OpenDriver(int ordinal)
    {
        try
        {
            return new Device(DriverDevice.Open(IlgpuTune.Kernels.Ptx.PrecompiledPtx.Library, AheadOfTimePtx.MinimumDriver, ordinal));
        }
        catch (Exception e) when (e is CudaDriverUnavailableException or CudaDriverException)
        {
            throw new InvalidOperationException($"no CUDA device: {e.Message}", e);
        }
    }

    private static Device? TryOpenDriver(int ordinal)
    {
        try
        {
            return new Device(DriverDevice.Open(IlgpuTune.Kernels.Ptx.PrecompiledPtx.Library, AheadOfTimePtx.MinimumDriver, ordinal));
        }
        catch (Exception e) when (e is CudaDriverUnavailableException or CudaDriverException)
        {
            return null; // auto: no usable GPU through the driver, the managed CPU path
        }
    }

    private static Device? TryCreateCuda(int ordinal)
    {
        Context? context = null;
        try
        {
            context = Context.Create(b => b.Cuda().EnableAlgorithms());
            if (context.GetCudaDevices().Count == 0)
            {
                context.Dispose();
                return null;
            }
            if (ordinal >= context.GetCudaDevices().Count)
            {
                int count = context.GetCudaDevices().Count;
                context.Dispose();
                throw new InvalidOperationException($"GPU {ordinal} asked for (LOCAL_RANK), but this node has {count} CUDA device(s)");
            }
            return new Device(DeviceKind.Cuda, context, context.GetCudaDevice(ordinal).CreateAccelerator(context));
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or CudaException or NotSupportedException)
        {
            context?.Dispose();
            return null;
        }
    }

    public KernelRegistry RequireKernels() =>
        Kernels ?? throw new InvalidOperationException("the managed CPU device has no kernel registry");

    public void Synchronize()
    {
        Accelerator?.Synchronize();
        Driver?.Synchronize();
    }

    private StreamOrder? _streamOrder;

    /// <summary>
    /// A stream beside the default one for copies and updates that should overlap it. On CUDA it is non-blocking: ILGPU's
    /// default stream is the legacy NULL stream, which would otherwise serialise with every other blocking stream, so the
    /// only order between them is the one made explicit (<see cref="Order"/>, fences).
    /// </summary>
    public AcceleratorStream CreateSideStream()
    {
        var acc = Accelerator ?? throw new InvalidOperationException("the managed CPU device has no streams");
        return acc is CudaAccelerator cuda ? cuda.CreateStream(StreamFlags.CU_STREAM_NON_BLOCKING) : acc.CreateStream();
    }

    /// <summary>Work enqueued on <paramref name="then"/> from now on waits for the work enqueued on <paramref name="first"/> so far
    /// (a CUDA event, without blocking the host; elsewhere the host waits for <paramref name="first"/>).</summary>
    public void Order(AcceleratorStream first, AcceleratorStream then) =>
        (_streamOrder ??= new StreamOrder(Accelerator ?? throw new InvalidOperationException("the managed CPU device has no streams"))).Order(first, then);

    public void Dispose()
    {
        _streamOrder?.Dispose();
        Kernels?.Dispose();
        (Backend as IDisposable)?.Dispose();
        Allocator.Dispose();
        Driver?.Dispose();
        Accelerator?.Dispose();
        _context?.Dispose();
    }

    public override string ToString() => $"{Kind}: {Name}";
}
