using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// The registry is the one loading seam: every kernel goes through its IKernelLoader once, and a disposed registry loads nothing.
[Collection(IlgpuCpuCollection.Name)]
public class KernelRegistryTests(IlgpuCpuFixture gpu)
{
    sealed class CountingLoader : IKernelLoader
    {
        public List<string> Loaded { get; } = [];

        public Kernel Load(Accelerator accelerator, KernelDeclaration kernel)
        {
            Loaded.Add(kernel.Name);
            return new IlgpuKernelLoader().Load(accelerator, kernel);
        }
    }

    [Fact]
    public void EachKernelIsLoadedOnceThroughTheRegistrysLoader()
    {
        var loader = new CountingLoader();
        using var k = new KernelRegistry(gpu.Accelerator, loader: loader);
        using var y = gpu.Zeros(40);
        using var sums = gpu.Zeros(10);
        Elementwise.Fill(k, 2f, 40, y.View);
        Elementwise.Fill(k, 3f, 40, y.View);
        Elementwise.SumRows(k, y.View, 4, 10, sums.View); // an implicitly grouped kernel
        Assert.Equal(["elementwise.fill", "elementwise.sumrows"], loader.Loaded);
        Assert.Equal(2, k.LoadedCount);
        Assert.Equal(Enumerable.Repeat(12f, 10), sums.GetAsArray1D());
    }

    [Fact]
    public void ADisposedRegistryLoadsNothing()
    {
        var k = new KernelRegistry(gpu.Accelerator);
        using var y = gpu.Zeros(8);
        Elementwise.Fill(k, 1f, 8, y.View);
        k.Dispose();
        Assert.Equal(0, k.LoadedCount);
        Assert.Throws<ObjectDisposedException>(() => Elementwise.Fill(k, 1f, 8, y.View));
    }

    [Fact]
    public void PostProcessRetargetsOnlySm90aKernels()
    {
        const string Ptx = ".version 8.0\n.target sm_80\n.address_size 64\n";
        var kernel = new KernelDeclaration("x", typeof(KernelRegistryTests).GetMethod(nameof(PostProcessRetargetsOnlySm90aKernels))!);
        Assert.Equal(Ptx, IlgpuKernelLoader.PostProcess(Ptx, kernel));
        Assert.Equal(".version 8.0\n.target sm_90a\n.address_size 64\n",
            IlgpuKernelLoader.PostProcess(Ptx, kernel with { Target = KernelTarget.Sm90a }));
    }
}
