// What a kernel is, as data: the registry (KernelRegistry) and its loading step (IKernelLoader) act on declarations only,
// so an op file says which method to run and what it needs, never how it is compiled or loaded.
using System.Reflection;
using ILGPU;

namespace IlgpuTune.Kernels;

/// <summary>The PTX ISA target a kernel is loaded for.</summary>
public enum KernelTarget
{
    /// <summary>The PTX as ILGPU 1.5.3 writes it (sm_80 features at most): runs on every supported GPU.</summary>
    Sm80,

    /// <summary>Retargeted to sm_90a (wgmma; ILGPU writes at most sm_90, which lacks it): compute capability 9.0 only.</summary>
    Sm90a,
}

/// <summary>Post-passes applied to a kernel's PTX before it is loaded (CUDA only).</summary>
[Flags]
public enum PtxPasses
{
    None = 0,

    /// <summary>PtxLocals.Promote: inline-asm .local slots become registers (kernels with CudaAsm).</summary>
    PromoteLocals = 1,
}

/// <summary>
/// One kernel: its cache name, entry method (explicitly grouped, or implicitly grouped when its first parameter is an
/// ILGPU index: then loaded with an occupancy-derived group size), dynamic shared memory in bytes (the limit is raised
/// past 48 KB when more), PTX target and post-passes.
/// </summary>
public readonly record struct KernelDeclaration(string Name, MethodInfo Entry, int SharedBytes = 0,
    KernelTarget Target = KernelTarget.Sm80, PtxPasses Passes = PtxPasses.None)
{
    /// <summary>A kernel from a method group (a static kernel method).</summary>
    public KernelDeclaration(string name, Delegate entry, int sharedBytes = 0, KernelTarget target = KernelTarget.Sm80,
        PtxPasses passes = PtxPasses.None) : this(name, entry.Method, sharedBytes, target, passes) { }

    /// <summary>True when the entry takes an ILGPU index first (ILGPU picks the group size).</summary>
    public bool ImplicitlyGrouped => Entry.GetParameters() is [{ ParameterType: var first }, ..]
        && (first == typeof(Index1D) || first == typeof(Index2D) || first == typeof(Index3D));
}
