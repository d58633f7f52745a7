// The loading step of the registry: a declaration in, a loaded ILGPU kernel out. IlgpuKernelLoader compiles with ILGPU's
// JIT (and, on CUDA, runs the declared PTX post-passes and retargeting); a loader of precompiled PTX through the driver API
// would be one more implementation of IKernelLoader, with no change to the registry or the op files.
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

public interface IKernelLoader
{
    /// <summary>Loads <paramref name="kernel"/> on <paramref name="accelerator"/>; the caller owns (disposes) the result.</summary>
    Kernel Load(Accelerator accelerator, KernelDeclaration kernel);
}

/// <summary>Compiles each kernel with ILGPU at first use.</summary>
public sealed partial class IlgpuKernelLoader : IKernelLoader
{
    public Kernel Load(Accelerator accelerator, KernelDeclaration kernel)
    {
        var compiled = Compile(accelerator.GetBackend(), kernel);
        return kernel.ImplicitlyGrouped
            ? accelerator.LoadAutoGroupedKernel(compiled)
            : accelerator.LoadKernel(compiled);
    }

    /// <summary>
    /// Compiles <paramref name="kernel"/> with <paramref name="backend"/>; PTX gets the declared post-passes and target.
    /// (The GPU bench writes this PTX to files, without a device.)
    /// </summary>
    public static CompiledKernel Compile(Backend backend, KernelDeclaration kernel)
    {
        var entry = kernel.ImplicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel.Entry)
            : EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Entry);
        var compiled = backend.Compile(entry, default);
        if (compiled is PTXCompiledKernel ptx) PtxLocals.Rewrite(ptx, PostProcess(ptx.PTXAssembly, kernel));
        return compiled;
    }

    /// <summary>The declared PTX post-passes, then the target.</summary>
    public static string PostProcess(string ptx, KernelDeclaration kernel)
    {
        if (kernel.Passes.HasFlag(PtxPasses.PromoteLocals)) ptx = PtxLocals.Promote(ptx).Ptx;
        return kernel.Target == KernelTarget.Sm90a ? TargetLine().Replace(ptx, ".target sm_90a") : ptx;
    }

    [GeneratedRegex(@"^\.target\s+sm_\d+a?", RegexOptions.Multiline)]
    private static partial Regex TargetLine();
}
