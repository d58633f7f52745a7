// The loading step of the registry: a declaration in, a loaded ILGPU kernel out. IlgpuKernelLoader compiles with ILGPU's
// JIT (and, on CUDA, runs the declared PTX post-passes and retargeting); a loader of precompiled PTX through the driver API
// would be one more implementation of IKernelLoader, with no change to the registry or the op files.
using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

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
        // ILGPU's output depends on what its context compiled before (cached, already-optimised IR of shared helpers):
        // compiling each kernel from a cleared cache makes its PTX a function of the kernel alone, the same in the JIT
        // path of any process and in the ahead-of-time build. The lock keeps another thread from compiling meanwhile.
        CompiledKernel compiled;
        lock (backend.Context)
        {
            backend.Context.ClearCache(ClearCacheMode.Everything);
            compiled = backend.Compile(entry, default);
        }
        if (compiled is PTXCompiledKernel ptx) PtxLocals.Rewrite(ptx, PostProcess(ptx.PTXAssembly, kernel));
        return compiled;
    }

    /// <summary>The declared PTX post-passes, then the target, then <see cref="Renumber"/>.</summary>
    public static string PostProcess(string ptx, KernelDeclaration kernel)
    {
        if (kernel.Passes.HasFlag(PtxPasses.PromoteLocals)) ptx = PtxLocals.Promote(ptx).Ptx;
        return Renumber(kernel.Target == KernelTarget.Sm90a ? TargetLine().Replace(ptx, ".target sm_90a") : ptx);
    }

    /// <summary>
    /// ILGPU suffixes parameter names and labels with ids of its process-wide IR (`_x_2100`, `L_336520`), which depend on
    /// what was compiled before; renumbering them in order of appearance (a bijection, so the code is unchanged) makes a
    /// kernel's PTX the same in every process, which lets ahead-of-time PTX equal what this JIT path loads.
    /// </summary>
    public static string Renumber(string ptx)
    {
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        return NumberedName().Replace(ptx, m =>
        {
            if (!names.TryGetValue(m.Value, out var renamed))
                names[m.Value] = renamed = m.Groups[1].Value + names.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return renamed;
        });
    }

    [GeneratedRegex(@"^\.target\s+sm_\d+a?", RegexOptions.Multiline)]
    private static partial Regex TargetLine();

    [GeneratedRegex(@"\b((?:_\w*?_)|L_)\d+\b")]
    private static partial Regex NumberedName();
}

/// <summary>
/// The ahead-of-time PTX of the catalogue (tools/IlgpuTune.PtxAot writes it; IlgpuTune.Kernels.Ptx embeds it): per GPU
/// architecture, each kernel compiled exactly as <see cref="IlgpuKernelLoader.Compile"/> does on a CUDA accelerator of that
/// architecture, with a fixed PTX ISA so one build loads on every driver from <see cref="MinimumDriver"/> on.
/// </summary>
public static class AheadOfTimePtx
{
    /// <summary>PTX ISA 8.0 (CUDA 12.0): the lowest with wgmma, which the sm_90a kernels use.</summary>
    public static CudaInstructionSet InstructionSet => CudaInstructionSet.ISA_80;

    /// <summary>The driver version (cuDriverGetVersion) that first reads <see cref="InstructionSet"/>.</summary>
    public const int MinimumDriver = 12000;

    /// <summary>Ampere-class (sm_80: every GPU of compute capability 8.x, ILGPU's highest target) and Hopper (sm_90, with sm_90a kernels).</summary>
    public static IReadOnlyList<CudaArchitecture> Architectures { get; } = [CudaArchitecture.SM_80, CudaArchitecture.SM_90];

    /// <summary>"sm_80": the folder of an architecture's PTX.</summary>
    public static string Folder(CudaArchitecture architecture) => $"sm_{architecture.Major}{architecture.Minor}";

    /// <summary>The PTX architecture a device of compute capability major.minor loads: sm_90 for 9.0, sm_80 for other 8.x and later, none below.</summary>
    public static CudaArchitecture? ForDevice(int major, int minor) =>
        major == 9 && minor == 0 ? CudaArchitecture.SM_90 : major >= 8 ? CudaArchitecture.SM_80 : null;

    /// <summary>Whether <paramref name="kernel"/> runs on <paramref name="architecture"/> (sm_90a kernels only on sm_90).</summary>
    public static bool Runs(CudaArchitecture architecture, in KernelDeclaration kernel) =>
        kernel.Target != KernelTarget.Sm90a || architecture == CudaArchitecture.SM_90;

    /// <summary>The backend a CUDA accelerator of <paramref name="architecture"/> would compile with (CudaAccelerator's own arguments).</summary>
    public static PTXBackend Backend(Context context, CudaArchitecture architecture) =>
        new(context, new CudaCapabilityContext(architecture), architecture, InstructionSet, null!);

    /// <summary>Identifies a kernel's entry method across processes: type, name, generic arguments, parameter types.</summary>
    public static string MethodKey(MethodInfo method) =>
        $"{method.DeclaringType?.FullName}::{method.Name}" +
        (method.IsGenericMethod ? $"<{string.Join(',', method.GetGenericArguments().Select(t => t.FullName))}>" : "") +
        $"({string.Join(',', method.GetParameters().Select(p => p.ParameterType.FullName))})";
}

/// <summary>
/// Loads ahead-of-time PTX (IlgpuTune.Kernels.Ptx) on CUDA: no IL→PTX compile at start-up, and the same text the JIT path
/// would compile. A kernel without a matching precompiled entry (another GPU architecture, a declaration that changed since
/// the build) and every non-CUDA accelerator fall back to <see cref="IlgpuKernelLoader"/>. ILGPU_TUNE_JIT=1 turns it off.
/// </summary>
public sealed class PrecompiledKernelLoader(Driver.PtxLibrary library) : IKernelLoader
{
    public const string JitVariable = "ILGPU_TUNE_JIT";

    private readonly IlgpuKernelLoader _jit = new();

    /// <summary>The loader the registry uses: precompiled PTX unless ILGPU_TUNE_JIT=1 asks for the JIT (kernel development).</summary>
    public static IKernelLoader For(Func<Driver.PtxLibrary> library) =>
        Environment.GetEnvironmentVariable(JitVariable) is "1" or "true" ? new IlgpuKernelLoader() : new PrecompiledKernelLoader(library());

    public Kernel Load(Accelerator accelerator, KernelDeclaration kernel)
    {
        var entry = Find(accelerator, kernel);
        if (entry is null) return _jit.Load(accelerator, kernel);
        var compiled = Compiled(accelerator.Context, kernel, entry, library.Text(entry));
        return kernel.ImplicitlyGrouped ? accelerator.LoadAutoGroupedKernel(compiled) : accelerator.LoadKernel(compiled);
    }

    /// <summary>The precompiled entry for <paramref name="kernel"/> on <paramref name="accelerator"/>, or null (JIT then).</summary>
    public Driver.PtxEntry? Find(Accelerator accelerator, in KernelDeclaration kernel) =>
        accelerator is CudaAccelerator cuda
            && (cuda.InstructionSet.Major, cuda.InstructionSet.Minor).CompareTo((AheadOfTimePtx.InstructionSet.Major, AheadOfTimePtx.InstructionSet.Minor)) >= 0
            && AheadOfTimePtx.ForDevice(cuda.Architecture.Major, cuda.Architecture.Minor) is { } arch
            && library.Find(AheadOfTimePtx.Folder(arch), kernel.Name) is { } entry
            && entry.Method == AheadOfTimePtx.MethodKey(kernel.Entry) && entry.Target == kernel.Target.ToString()
            && entry.Passes == kernel.Passes.ToString()
            ? entry : null;

    /// <summary>ILGPU's compiled-kernel object for precompiled PTX: the entry point as ILGPU would describe it, with the stored text.</summary>
    public static PTXCompiledKernel Compiled(Context context, in KernelDeclaration kernel, Driver.PtxEntry entry, string ptx)
    {
        var description = kernel.ImplicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel.Entry)
            : EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Entry);
        var entryPoint = new EntryPoint(description, new SharedMemorySpecification(entry.StaticShared, entry.DynamicShared), KernelSpecialization.Empty);
        return (PTXCompiledKernel)CompiledKernelConstructor.Invoke([context, entryPoint, null, ptx]);
    }

    // ILGPU 1.5.3 keeps this constructor internal (only its backend makes compiled kernels); the JIT CLI may use reflection.
    private static readonly ConstructorInfo CompiledKernelConstructor = typeof(PTXCompiledKernel).GetConstructor(
        BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, [typeof(Context), typeof(EntryPoint), typeof(CompiledKernel.KernelInfo), typeof(string)])
        ?? throw new MissingMethodException("ILGPU's PTXCompiledKernel(Context, EntryPoint, KernelInfo, string) constructor is gone (ILGPU upgraded?)");
}
