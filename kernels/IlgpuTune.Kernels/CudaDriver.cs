// Every call into the CUDA driver that ILGPU 1.5.3 does not wrap, in one place: nvcuda on Windows, libcuda.so.1
// elsewhere (the driver's soname; the unversioned libcuda.so comes only with a toolkit).
using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;

namespace IlgpuTune.Kernels;

public static partial class CudaDriver
{
    private const string Library = "cuda";

    static CudaDriver() => NativeLibrary.SetDllImportResolver(typeof(CudaDriver).Assembly, Resolve);

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == Library ? NativeLibrary.Load(OperatingSystem.IsWindows() ? "nvcuda" : "libcuda.so.1") : IntPtr.Zero;

    // CUfunction_attribute values used here.
    private const int LocalSizeBytes = 3, NumRegs = 4, MaxDynamicSharedSizeBytes = 8;

    [LibraryImport(Library, EntryPoint = "cuFuncSetAttribute")]
    private static partial CudaError FuncSetAttribute(IntPtr function, int attribute, int value);

    [LibraryImport(Library, EntryPoint = "cuFuncGetAttribute")]
    private static partial CudaError FuncGetAttribute(out int value, int attribute, IntPtr function);

    [LibraryImport(Library, EntryPoint = "cuStreamWaitEvent")]
    private static partial CudaError StreamWaitEvent(IntPtr stream, IntPtr cudaEvent, uint flags);

    /// <summary>Lets <paramref name="kernel"/> use <paramref name="bytes"/> of dynamic shared memory (ILGPU never raises it past 48 KB).</summary>
    public static void RaiseSharedMemory(CudaKernel kernel, int bytes) =>
        Check(FuncSetAttribute(kernel.FunctionPtr, MaxDynamicSharedSizeBytes, bytes), $"cuFuncSetAttribute({bytes} B shared memory)");

    /// <summary>Registers per thread and local memory (stack) bytes per thread of a loaded kernel.</summary>
    public static (int Registers, int LocalBytes) Resources(CudaKernel kernel)
    {
        Check(FuncGetAttribute(out int registers, NumRegs, kernel.FunctionPtr), "cuFuncGetAttribute(NUM_REGS)");
        Check(FuncGetAttribute(out int local, LocalSizeBytes, kernel.FunctionPtr), "cuFuncGetAttribute(LOCAL_SIZE_BYTES)");
        return (registers, local);
    }

    /// <summary>Work enqueued on <paramref name="stream"/> from now on waits for <paramref name="cudaEvent"/>'s last record.</summary>
    public static void WaitEvent(CudaStream stream, IntPtr cudaEvent) =>
        CudaException.ThrowIfFailed(StreamWaitEvent(stream.StreamPtr, cudaEvent, 0));

    private static void Check(CudaError rc, string call)
    {
        if (rc != 0) throw new InvalidOperationException($"{call} failed: CUDA error {(int)rc}");
    }
}
