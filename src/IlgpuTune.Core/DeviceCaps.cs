// What a device can do, computed once when the Device is made; the backend and the device read it instead of testing
// accelerator types here and there.
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

/// <param name="Emulated">ILGPU's CPU accelerator: the GPU kernels run in an emulator (tests).</param>
/// <param name="GroupSize">Threads per group of the one-group-per-row kernels (0 on the managed CPU path).</param>
/// <param name="ComputeCapability">CUDA compute capability (major, minor); null off CUDA.</param>
/// <param name="Wgmma">Hopper's wgmma (sm_90a PTX) runs here: compute capability 9.0.</param>
/// <param name="SharedMemoryPerBlock">Bytes of shared memory a group may use (0 on the managed CPU path).</param>
/// <param name="HalfMatmuls">16-bit tensor-core matmul and flash-attention kernels exist (any ILGPU accelerator).</param>
public sealed record DeviceCaps(bool Emulated, int GroupSize, (int Major, int Minor)? ComputeCapability, bool Wgmma,
    int SharedMemoryPerBlock, bool HalfMatmuls)
{
    /// <summary>The managed CPU path: references only, fp32; frozen 16-bit weights are widened inside its products.</summary>
    public static DeviceCaps ManagedCpu { get; } = new(false, 0, null, false, 0, false) { WidensHalfWeights = true };

    /// <summary>fp32 products take a frozen BF16/F16 weight as stored and widen it block by block (the managed CPU path).</summary>
    public bool WidensHalfWeights { get; init; }

    /// <summary>A GPU's memory, apart from the host's: what keeping a tensor in host memory frees (not the managed CPU path
    /// or ILGPU's CPU emulator, whose device memory is host memory).</summary>
    public bool SeparateMemory => ComputeCapability is not null;

    /// <summary>An accelerator's capabilities, as its kernel registry sees them (the registry decides emulation and wgmma once).</summary>
    public static DeviceCaps Of(KernelRegistry kernels)
    {
        var acc = kernels.Accelerator;
        (int, int)? cc = acc is CudaAccelerator { Architecture: { } arch } ? (arch.Major, arch.Minor) : null;
        return new DeviceCaps(kernels.IsEmulated, kernels.RowGroupSize, cc, kernels.Wgmma, acc.MaxSharedMemoryPerGroup, true);
    }
}
