// The compute device: one object owning an ILGPU Context + Accelerator (or none, for the managed CPU path),
// the kernel registry and the caching allocator. ILGPUTUNE_DEVICE=cuda|cpu|ilgpu-cpu forces a kind.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;

namespace IlgpuTune.Core;

public enum DeviceKind
{
    /// <summary>Managed CPU path: the CPU reference implementations (TensorPrimitives + Parallel.For).</summary>
    Cpu,
    /// <summary>NVIDIA GPU through ILGPU's CUDA backend.</summary>
    Cuda,
    /// <summary>ILGPU's CPU accelerator (Nvidia kind, warp 32): runs the GPU kernels in an emulator, for tests.</summary>
    IlgpuCpu,
}

/// <summary>Precision of linear-layer matrix products on an ILGPU device.</summary>
public enum MatmulPrecision
{
    /// <summary>fp32 inputs and accumulation (the reference kernels).</summary>
    F32,
    /// <summary>Inputs rounded to bf16, fp32 accumulation, on tensor cores (mma.sync): torch's bf16 autocast for matmuls.</summary>
    BF16,
    /// <summary>Inputs rounded to fp16, fp32 accumulation, on tensor cores: torch's fp16 autocast (use with loss scaling).</summary>
    F16,
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
        Kernels = accelerator is null ? null : new KernelRegistry(accelerator);
        if (Kernels is not null) Kernels.WorkspaceResized = Allocator.TrackExternal;
    }

    public DeviceKind Kind { get; }

    /// <summary>True for the managed CPU path (no ILGPU accelerator).</summary>
    public bool IsCpu => Kind == DeviceKind.Cpu;

    public Accelerator? Accelerator { get; }

    public KernelRegistry? Kernels { get; }

    public CachingAllocator Allocator { get; }

    /// <summary>
    /// How Ops.Linear multiplies on an ILGPU device. The managed CPU path always computes in fp32. Activations, norms,
    /// softmax, loss and parameter updates stay fp32 in either mode.
    /// </summary>
    public MatmulPrecision MatmulPrecision { get; set; } = MatmulPrecision.F32;

    public string Name => Accelerator?.Name ?? $"managed CPU ({Environment.ProcessorCount} threads)";

    /// <summary>
    /// Creates the device named by <paramref name="kind"/> ("cuda", "cpu", "ilgpu-cpu", or null/"auto": CUDA when a GPU is
    /// present, else the managed CPU path). Without an argument, ILGPUTUNE_DEVICE decides.
    /// </summary>
    public static Device Create(string? kind = null)
    {
        kind ??= Environment.GetEnvironmentVariable(EnvironmentVariable);
        switch (kind?.Trim().ToLowerInvariant())
        {
            case null or "" or "auto":
                return TryCreateCuda() ?? new Device(DeviceKind.Cpu, null, null);
            case "cpu":
                return new Device(DeviceKind.Cpu, null, null);
            case "cuda":
                return TryCreateCuda() ?? throw new InvalidOperationException(
                    $"{EnvironmentVariable}=cuda but no CUDA device was found (is the NVIDIA driver installed?)");
            case "ilgpu-cpu":
                var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).EnableAlgorithms());
                return new Device(DeviceKind.IlgpuCpu, context, context.GetCPUDevice(0).CreateAccelerator(context));
            default:
                throw new ArgumentException($"unknown device '{kind}': expected cuda, cpu, ilgpu-cpu or auto");
        }
    }

    private static Device? TryCreateCuda()
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
            return new Device(DeviceKind.Cuda, context, context.GetCudaDevice(0).CreateAccelerator(context));
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or CudaException or NotSupportedException)
        {
            context?.Dispose();
            return null;
        }
    }

    public KernelRegistry RequireKernels() =>
        Kernels ?? throw new InvalidOperationException("the managed CPU device has no kernel registry");

    public void Synchronize() => Accelerator?.Synchronize();

    public void Dispose()
    {
        Kernels?.Dispose();
        Allocator.Dispose();
        Accelerator?.Dispose();
        _context?.Dispose();
    }

    public override string ToString() => $"{Kind}: {Name}";
}
