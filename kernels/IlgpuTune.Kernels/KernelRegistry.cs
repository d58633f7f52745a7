// The one seam through which every kernel is loaded and launched. Each kernel is compiled once per accelerator
// and cached by name; launchers ask for it with Get. A later AOT path can swap this registry for one that loads
// precompiled PTX through the CUDA driver API, without touching the op files.
using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

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
    }

    public Accelerator Accelerator { get; }

    public AcceleratorStream Stream => Accelerator.DefaultStream;

    /// <summary>True on ILGPU's CPU accelerator (a semantic emulator used to test kernels).</summary>
    public bool IsEmulated { get; }

    /// <summary>Threads per group for one-group-per-row kernels (a multiple of the warp size).</summary>
    public int RowGroupSize { get; }

    /// <summary>Returns the cached launcher named <paramref name="name"/>, loading it on first use.</summary>
    public T Get<T>(string name, Func<Accelerator, T> load) where T : Delegate =>
        (T)_kernels.GetOrAdd(name, _ => load(Accelerator));

    /// <summary>Number of kernels loaded so far (for tests of the load-once rule).</summary>
    public int LoadedCount => _kernels.Count;
}
