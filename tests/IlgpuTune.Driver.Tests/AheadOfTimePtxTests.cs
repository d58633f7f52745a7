using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Driver;
using IlgpuTune.Kernels;
using IlgpuTune.Kernels.Ptx;

namespace IlgpuTune.Driver.Tests;

// The embedded PTX (IlgpuTune.Kernels.Ptx, written at build time by tools/IlgpuTune.PtxAot) against the JIT path and the
// kernels' C# signatures. No GPU: ILGPU's PTX backend runs on the CPU.
public class AheadOfTimePtxTests
{
    static PtxLibrary Library => PrecompiledPtx.Library;

    // Small kernels of each kind: explicit, implicitly grouped, generic with a struct parameter, shared memory.
    [Theory]
    [InlineData("rmsnorm.forward")]
    [InlineData("elementwise.sumrows")]
    [InlineData("gemm.splitreduce")]
    [InlineData("adamw.step.multi")]
    public void EmbeddedPtxEqualsWhatTheJitPathCompilesOnEachArchitecture(string name)
    {
        var kernel = KernelCatalogue.Cuda.Single(k => k.Name == name);
        using var context = Context.Create(b => b.EnableAlgorithms());
        foreach (var architecture in AheadOfTimePtx.Architectures)
        {
            using var backend = AheadOfTimePtx.Backend(context, architecture);
            string jit = ((PTXCompiledKernel)IlgpuKernelLoader.Compile(backend, kernel)).PTXAssembly;
            var entry = Library.Find(AheadOfTimePtx.Folder(architecture), name);
            Assert.NotNull(entry);
            Assert.Equal(jit, Library.Text(entry));
        }
    }

    [Fact]
    public void EveryCatalogueKernelIsEmbeddedForEachArchitectureItRunsOn()
    {
        Assert.True(KernelCatalogue.Cuda.Count > 100, $"catalogue has only {KernelCatalogue.Cuda.Count} kernels");
        foreach (var kernel in KernelCatalogue.Cuda)
            foreach (var architecture in AheadOfTimePtx.Architectures)
            {
                var entry = Library.Find(AheadOfTimePtx.Folder(architecture), kernel.Name);
                if (!AheadOfTimePtx.Runs(architecture, kernel))
                {
                    Assert.Null(entry);
                    continue;
                }
                Assert.NotNull(entry);
                Assert.Equal(AheadOfTimePtx.MethodKey(kernel.Entry), entry.Method);
                Assert.Equal((kernel.Target.ToString(), kernel.Passes.ToString(), kernel.ImplicitlyGrouped),
                    (entry.Target, entry.Passes, entry.ImplicitlyGrouped));
            }
        Assert.Equal(KernelCatalogue.Cuda.Sum(k => AheadOfTimePtx.Architectures.Count(a => AheadOfTimePtx.Runs(a, k))), Library.Entries.Count());
    }

    // The catalogue reads declarations out of the op files' IL: every kernel-shaped method of the assembly must be in it, so a
    // kernel declared in a way the reader misses fails here instead of being absent from AOT builds.
    [Fact]
    public void CatalogueHoldsEveryKernelMethodOfTheAssembly()
    {
        var entries = KernelCatalogue.Cuda.Select(k => k.Entry.IsGenericMethod ? k.Entry.GetGenericMethodDefinition() : k.Entry).ToHashSet();
        var missing = typeof(KernelCatalogue).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => m.ReturnType == typeof(void) && m.Name.EndsWith("Kernel", StringComparison.Ordinal) && !m.Name.Contains('<')
                && m.GetParameters().Any(p => p.ParameterType.IsGenericType && p.ParameterType.GetGenericTypeDefinition() == typeof(ArrayView<>)))
            .Where(m => !entries.Contains(m))
            .Select(m => $"{m.DeclaringType!.Name}.{m.Name}").ToList();
        Assert.Empty(missing);
    }

    // ILGPU's PTX parameter ABI: a view is {pointer, length} (16 bytes, align 8; in .NET an ArrayView is larger), a scalar
    // its size, a struct its fields in order at their alignment with views as 16 bytes. Checked for every parameter of every
    // embedded kernel, so KernelArguments callers can mirror a kernel's structs with DeviceView in place of views.
    [Fact]
    public void PtxParameterLayoutIsTheIlgpuAbiOfTheCSharpTypes()
    {
        foreach (var kernel in KernelCatalogue.Cuda)
        {
            var entry = Library.Find("sm_90", kernel.Name)!;
            var layout = kernel.Entry.GetParameters().Select(p => Layout(p.ParameterType)).ToArray();
            Assert.True(layout.Select(l => l.Size).SequenceEqual(entry.Parameters.Select(p => p.Size)),
                $"{kernel.Name}: C# [{string.Join(',', layout)}], PTX [{string.Join(',', entry.Parameters)}]");
        }
    }

    static (int Size, int Align) Layout(Type type)
    {
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(ArrayView<>)) return (16, 8);
        if (type.IsPrimitive || type.IsEnum) return (Marshal.SizeOf(type.IsEnum ? Enum.GetUnderlyingType(type) : type),
            Marshal.SizeOf(type.IsEnum ? Enum.GetUnderlyingType(type) : type));
        int offset = 0, align = 1;
        foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
        {
            var (size, a) = Layout(field.FieldType);
            offset = (offset + a - 1) / a * a + size;
            align = Math.Max(align, a);
        }
        return ((offset + align - 1) / align * align, align);
    }

    // The CLI's loader on CUDA: precompiled PTX wrapped as ILGPU's compiled kernel (then loaded as the JIT's would be);
    // anything but a CUDA accelerator goes to the JIT.
    [Fact]
    public void PrecompiledLoaderWrapsTheTextAsIlgpusCompiledKernel_AndLeavesOtherAcceleratorsToTheJit()
    {
        using var context = Context.Create(b => b.CPU().EnableAlgorithms());
        foreach (var name in new[] { "elementwise.sumrows", "rmsnorm.forward" })
        {
            var kernel = KernelCatalogue.Cuda.Single(k => k.Name == name);
            var entry = Library.Find("sm_80", name)!;
            var compiled = PrecompiledKernelLoader.Compiled(context, kernel, entry, Library.Text(entry));
            Assert.Equal(Library.Text(entry), compiled.PTXAssembly);
            Assert.Equal(kernel.Entry, compiled.SourceMethod);
            Assert.Equal(kernel.ImplicitlyGrouped, compiled.IndexType != IndexType.KernelConfig);
        }
        using var cpu = context.GetCPUDevice(0).CreateAccelerator(context);
        Assert.Null(new PrecompiledKernelLoader(Library).Find(cpu, KernelCatalogue.Cuda[0]));
    }

    [Fact]
    public void RenumberingIsABijectionOfIlgpuIds()
    {
        const string ptx = ".param .b64 _n_2101,\n.param .b64 _x_77\nld.param.b64 %rd4, [_n_2101];\nL_9:\nbra L_9;\ncp.async.wait_group 0;\n";
        Assert.Equal(".param .b64 _n_0,\n.param .b64 _x_1\nld.param.b64 %rd4, [_n_0];\nL_2:\nbra L_2;\ncp.async.wait_group 0;\n",
            IlgpuKernelLoader.Renumber(ptx));
    }
}
