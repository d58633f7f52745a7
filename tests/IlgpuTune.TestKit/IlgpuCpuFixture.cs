using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;

namespace IlgpuTune.TestKit;

/// <summary>
/// One ILGPU CPU accelerator (Nvidia kind: warp 32) shared by a test collection. It emulates every GPU thread
/// with an OS thread, so kernel tests keep shapes tiny. Set ILGPUTUNE_TEST_DEVICE=cuda to run the same tests on a GPU.
/// </summary>
public sealed class IlgpuCpuFixture : IDisposable
{
    public IlgpuCpuFixture()
    {
        bool cuda = Environment.GetEnvironmentVariable("ILGPUTUNE_TEST_DEVICE") == "cuda";
        Context = cuda
            ? Context.Create(b => b.Cuda().EnableAlgorithms())
            : Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).EnableAlgorithms()
                .Optimize(OptimizationLevel.O0).Inlining(InliningMode.Conservative)); // as Device's emulator: compiles ~15x faster
        Accelerator = cuda
            ? Context.GetCudaDevice(0).CreateAccelerator(Context)
            : Context.GetCPUDevice(0).CreateAccelerator(Context);
        Kernels = new KernelRegistry(Accelerator);
    }

    public Context Context { get; }
    public ILGPU.Runtime.Accelerator Accelerator { get; }
    public KernelRegistry Kernels { get; }

    public ILGPU.Runtime.MemoryBuffer1D<float, ILGPU.Stride1D.Dense> Upload(float[] data) => Accelerator.Allocate1D(data);
    public ILGPU.Runtime.MemoryBuffer1D<int, ILGPU.Stride1D.Dense> Upload(int[] data) => Accelerator.Allocate1D(data);

    public ILGPU.Runtime.MemoryBuffer1D<float, ILGPU.Stride1D.Dense> Zeros(long n)
    {
        var b = Accelerator.Allocate1D<float>(Math.Max(n, 1));
        b.MemSetToZero();
        return b;
    }

    public void Dispose()
    {
        Kernels.Dispose();
        Accelerator.Dispose();
        Context.Dispose();
    }
}
