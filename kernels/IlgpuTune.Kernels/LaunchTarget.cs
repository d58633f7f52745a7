// What a launcher's plan (kernel choice, grid, group, shared memory) depends on besides sizes and alignment: the plan
// functions of the op files take this instead of a KernelRegistry, so the ILGPU launchers and the driver runtime's
// backend (Core's DriverBackend, precompiled PTX without an ILGPU Context) launch the same kernels with the same shapes.
namespace IlgpuTune.Kernels;

/// <param name="Emulated">ILGPU's CPU accelerator (small groups, emulated kernels).</param>
/// <param name="RowGroupSize">Threads per group of the one-group-per-row kernels.</param>
/// <param name="Wgmma">Hopper's wgmma (sm_90a PTX) runs here.</param>
/// <param name="Multiprocessors">SMs of the device (split-K decisions).</param>
public readonly record struct LaunchTarget(bool Emulated, int RowGroupSize, bool Wgmma, int Multiprocessors)
{
    /// <summary>Row groups on a GPU; the CPU accelerator runs one OS thread per simulated thread, so it gets 32.</summary>
    public const int GpuRowGroupSize = 256, EmulatedRowGroupSize = 32;

    /// <summary>A CUDA GPU (compute capability 9.0 runs wgmma).</summary>
    public static LaunchTarget Cuda(bool wgmma, int multiprocessors) => new(false, GpuRowGroupSize, wgmma, multiprocessors);
}
