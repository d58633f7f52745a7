// The one seam through which every kernel is loaded and launched. Op files declare kernels (KernelDeclaration) and ask
// for launchers with Get; the registry alone loads each kernel once (through its IKernelLoader: compile, PTX passes,
// retarget), raises its shared-memory limit, makes its launcher on this registry's stream, caches it by name and
// disposes it. Loading precompiled PTX through the driver API is one more IKernelLoader, without touching the op files.
using System.Collections.Concurrent;
using System.Linq.Expressions;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace IlgpuTune.Kernels;

/// <summary>Kernel choices of a registry (the GPU bench turns Hopper kernels off to time the kernels they replace).</summary>
public sealed record KernelOptions
{
    /// <summary>Flash attention's forward uses its wgmma kernel where it applies.</summary>
    public bool WgmmaAttentionForward { get; init; } = true;

    /// <summary>Flash attention's backward uses its wgmma dK/dV kernel where it applies.</summary>
    public bool WgmmaAttentionBackward { get; init; } = true;

    /// <summary>With the wgmma dK/dV kernel, the backward's dQ uses its wgmma kernel too.</summary>
    public bool WgmmaAttentionBackwardQuery { get; init; } = true;
}

public sealed class KernelRegistry : IDisposable
{
    private const int DefaultSharedLimit = 48 * 1024;

    private readonly ConcurrentDictionary<string, (Kernel Kernel, Delegate Launcher)> _kernels = new();
    private readonly IKernelLoader _loader;
    private readonly object _loadLock = new();

    public KernelRegistry(Accelerator accelerator, KernelOptions? options = null, IKernelLoader? loader = null)
    {
        Accelerator = accelerator;
        Options = options ?? new KernelOptions();
        _loader = loader ?? new IlgpuKernelLoader();
        // The CPU accelerator runs one OS thread per simulated GPU thread: keep its groups small.
        IsEmulated = accelerator is CPUAccelerator;
        RowGroupSize = IsEmulated ? LaunchTarget.EmulatedRowGroupSize : LaunchTarget.GpuRowGroupSize;
        Wgmma = !IsEmulated && accelerator is CudaAccelerator { Architecture: { Major: 9, Minor: 0 } };
    }

    public Accelerator Accelerator { get; }

    public AcceleratorStream Stream => Accelerator.DefaultStream;

    public KernelOptions Options { get; }

    /// <summary>True on ILGPU's CPU accelerator (a semantic emulator used to test kernels).</summary>
    public bool IsEmulated { get; }

    /// <summary>Hopper's wgmma runs here (sm_90a PTX needs a compute capability 9.0 GPU); the one place that asks.</summary>
    public bool Wgmma { get; }

    /// <summary>Threads per group for one-group-per-row kernels (a multiple of the warp size).</summary>
    public int RowGroupSize { get; }

    /// <summary>What the launchers' plans depend on here.</summary>
    public LaunchTarget Target => new(IsEmulated, RowGroupSize, Wgmma, Accelerator.NumMultiprocessors);

    /// <summary>
    /// The launcher of <paramref name="kernel"/>, loaded on first use. <typeparamref name="T"/> is ILGPU's launcher shape:
    /// (KernelConfig or Index1D, arguments…), bound to this registry's stream, or with an AcceleratorStream first.
    /// </summary>
    public T Get<T>(in KernelDeclaration kernel) where T : Delegate
    {
        Profile?.Mark(kernel.Name, Accelerator);
        if (_kernels.TryGetValue(kernel.Name, out var hit)) return (T)hit.Launcher;
        lock (_loadLock)
        {
            if (!_kernels.TryGetValue(kernel.Name, out hit))
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                hit = Load<T>(kernel);
                _kernels[kernel.Name] = hit;
            }
        }
        return (T)hit.Launcher;
    }

    /// <summary>The loaded kernel named <paramref name="name"/> (the GPU bench reads its registers and local memory).</summary>
    internal Kernel Loaded(string name) => _kernels[name].Kernel;

    private (Kernel, Delegate) Load<T>(KernelDeclaration declaration) where T : Delegate
    {
        var kernel = _loader.Load(Accelerator, declaration);
        try
        {
            if (declaration.SharedBytes > DefaultSharedLimit && kernel is CudaKernel cuda)
                CudaDriver.RaiseSharedMemory(cuda, declaration.SharedBytes);
            return (kernel, Launcher<T>(kernel));
        }
        catch
        {
            kernel.Dispose();
            throw;
        }
    }

    // ILGPU's launcher takes the stream first; a T without it gets one bound to this registry's stream (as ILGPU's
    // LoadStreamKernel does), compiled once per kernel.
    private T Launcher<T>(Kernel kernel) where T : Delegate
    {
        var parameters = typeof(T).GetMethod("Invoke")!.GetParameters()
            .Select(p => Expression.Parameter(p.ParameterType, p.Name)).ToArray();
        if (parameters is [{ Type: var first }, ..] && first == typeof(AcceleratorStream)) return kernel.CreateLauncherDelegate<T>();
        var withStream = Expression.GetDelegateType([typeof(AcceleratorStream), .. parameters.Select(p => p.Type), typeof(void)]);
        var launch = (Delegate)typeof(Kernel).GetMethod(nameof(Kernel.CreateLauncherDelegate))!.MakeGenericMethod(withStream)
            .Invoke(kernel, null)!;
        return Expression.Lambda<T>(Expression.Invoke(Expression.Constant(launch), [Expression.Constant(Stream), .. parameters]),
            parameters).Compile();
    }

    /// <summary>When set, every launch is timed (see KernelProfile); for diagnosis only, it serialises host and device.</summary>
    public KernelProfile? Profile { get; set; }

    private MemoryBuffer1D<float, Stride1D.Dense>? _workspace;
    private bool _disposed;

    /// <summary>Called with the change in bytes whenever the workspace is reallocated (device memory accounting).</summary>
    public Action<long>? WorkspaceResized { get; set; }

    /// <summary>
    /// A scratch fp32 buffer of at least <paramref name="n"/> elements for kernels that need one between launches
    /// (split-K partial sums). Shared by every kernel on this registry's stream; it grows and is never shrunk.
    /// </summary>
    internal ArrayView<float> Workspace(long n)
    {
        if (_workspace == null || _workspace.Length < n)
        {
            long old = _workspace?.LengthInBytes ?? 0;
            _workspace?.Dispose(); // cuMemFree waits for kernels still using it
            _workspace = Accelerator.Allocate1D<float>(Math.Max(n, 1));
            WorkspaceResized?.Invoke(_workspace.LengthInBytes - old);
        }
        return _workspace.View.SubView(0, n);
    }

    /// <summary>Number of kernels loaded so far (for tests of the load-once rule).</summary>
    public int LoadedCount => _kernels.Count;

    /// <summary>Frees the workspace and unloads every kernel; call before disposing the accelerator.</summary>
    public void Dispose()
    {
        lock (_loadLock)
        {
            if (_disposed) return;
            _disposed = true;
            _workspace?.Dispose();
            _workspace = null;
            foreach (var (kernel, _) in _kernels.Values) kernel.Dispose();
            _kernels.Clear();
        }
    }
}
