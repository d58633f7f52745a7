// The one seam through which every kernel is loaded and launched. Each kernel is compiled once per accelerator
// and cached by name; launchers ask for it with Get. A later AOT path can swap this registry for one that loads
// precompiled PTX through the CUDA driver API, without touching the op files.
using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace IlgpuTune.Kernels;

public sealed class KernelRegistry
{
    private readonly ConcurrentDictionary<string, Delegate> _kernels = new();

    public KernelRegistry(Accelerator accelerator)
    {
        Accelerator = accelerator;
        // The CPU accelerator runs one OS thread per simulated GPU thread: keep its groups small.
        IsEmulated = accelerator is CPUAccelerator;
        RowGroupSize = IsEmulated ? 32 : 256;
        Wgmma = !IsEmulated && accelerator is CudaAccelerator { Architecture: { Major: 9, Minor: 0 } };
    }

    public Accelerator Accelerator { get; }

    public AcceleratorStream Stream => Accelerator.DefaultStream;

    /// <summary>True on ILGPU's CPU accelerator (a semantic emulator used to test kernels).</summary>
    public bool IsEmulated { get; }

    /// <summary>Hopper's wgmma runs here (sm_90a PTX needs a compute capability 9.0 GPU); the one place that asks.</summary>
    public bool Wgmma { get; }

    /// <summary>Threads per group for one-group-per-row kernels (a multiple of the warp size).</summary>
    public int RowGroupSize { get; }

    /// <summary>Returns the cached launcher named <paramref name="name"/>, loading it on first use.</summary>
    public T Get<T>(string name, Func<Accelerator, T> load) where T : Delegate
    {
        Profile?.Mark(name, Accelerator);
        return (T)_kernels.GetOrAdd(name, _ => load(Accelerator));
    }

    /// <summary>When set, every launch is timed (see KernelProfile); for diagnosis only, it serialises host and device.</summary>
    public KernelProfile? Profile { get; set; }

    private MemoryBuffer1D<float, Stride1D.Dense>? _workspace;

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
}
