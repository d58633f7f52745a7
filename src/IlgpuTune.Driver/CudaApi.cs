// The CUDA driver API calls the runtime makes, declared with LibraryImport (source-generated marshalling: no reflection,
// so it works under Native AOT). nvcuda on Windows, libcuda.so.1 elsewhere: the driver only, no CUDA toolkit.
using System.Reflection;
using System.Runtime.InteropServices;

namespace IlgpuTune.Driver;

internal static partial class CudaApi
{
    private const string Library = "cuda";

    static CudaApi() => NativeLibrary.SetDllImportResolver(typeof(CudaApi).Assembly, Resolve);

    internal static string LibraryFile => OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == Library && NativeLibrary.TryLoad(LibraryFile, assembly, path, out var handle) ? handle : IntPtr.Zero;

    [LibraryImport(Library, EntryPoint = "cuInit")] internal static partial int Init(uint flags);
    [LibraryImport(Library, EntryPoint = "cuDriverGetVersion")] internal static partial int DriverGetVersion(out int version);
    [LibraryImport(Library, EntryPoint = "cuGetErrorName")] internal static partial int GetErrorName(int error, out IntPtr name);
    [LibraryImport(Library, EntryPoint = "cuDeviceGetCount")] internal static partial int DeviceGetCount(out int count);
    [LibraryImport(Library, EntryPoint = "cuDeviceGet")] internal static partial int DeviceGet(out int device, int ordinal);
    [LibraryImport(Library, EntryPoint = "cuDeviceGetAttribute")] internal static partial int DeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(Library, EntryPoint = "cuDeviceGetName")] internal static unsafe partial int DeviceGetName(byte* name, int length, int device);
    [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRetain")] internal static partial int PrimaryCtxRetain(out IntPtr context, int device);
    [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] internal static partial int PrimaryCtxRelease(int device);
    [LibraryImport(Library, EntryPoint = "cuCtxSetCurrent")] internal static partial int CtxSetCurrent(IntPtr context);
    [LibraryImport(Library, EntryPoint = "cuCtxSynchronize")] internal static partial int CtxSynchronize();
    [LibraryImport(Library, EntryPoint = "cuModuleLoadDataEx")]
    internal static unsafe partial int ModuleLoadDataEx(out IntPtr module, byte* image, uint numOptions, int* options, void** optionValues);
    [LibraryImport(Library, EntryPoint = "cuModuleUnload")] internal static partial int ModuleUnload(IntPtr module);
    [LibraryImport(Library, EntryPoint = "cuModuleGetFunction", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int ModuleGetFunction(out IntPtr function, IntPtr module, string name);
    [LibraryImport(Library, EntryPoint = "cuFuncSetAttribute")] internal static partial int FuncSetAttribute(IntPtr function, int attribute, int value);
    [LibraryImport(Library, EntryPoint = "cuOccupancyMaxPotentialBlockSize")]
    internal static partial int OccupancyMaxPotentialBlockSize(out int minGridSize, out int blockSize, IntPtr function, IntPtr sizeCallback,
        nuint dynamicShared, int blockSizeLimit);
    [LibraryImport(Library, EntryPoint = "cuLaunchKernel")]
    internal static unsafe partial int LaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, IntPtr stream, void** parameters, void** extra);
    [LibraryImport(Library, EntryPoint = "cuMemAlloc_v2")] internal static partial int MemAlloc(out ulong pointer, nuint bytes);
    [LibraryImport(Library, EntryPoint = "cuMemFree_v2")] internal static partial int MemFree(ulong pointer);
    [LibraryImport(Library, EntryPoint = "cuMemcpyHtoDAsync_v2")] internal static unsafe partial int MemcpyHtoDAsync(ulong dst, void* src, nuint bytes, IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoHAsync_v2")] internal static unsafe partial int MemcpyDtoHAsync(void* dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoDAsync_v2")] internal static partial int MemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuMemsetD8Async")] internal static partial int MemsetD8Async(ulong dst, byte value, nuint count, IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuStreamCreate")] internal static partial int StreamCreate(out IntPtr stream, uint flags);
    [LibraryImport(Library, EntryPoint = "cuStreamDestroy_v2")] internal static partial int StreamDestroy(IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuStreamSynchronize")] internal static partial int StreamSynchronize(IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuStreamWaitEvent")] internal static partial int StreamWaitEvent(IntPtr stream, IntPtr cudaEvent, uint flags);
    [LibraryImport(Library, EntryPoint = "cuEventCreate")] internal static partial int EventCreate(out IntPtr cudaEvent, uint flags);
    [LibraryImport(Library, EntryPoint = "cuEventRecord")] internal static partial int EventRecord(IntPtr cudaEvent, IntPtr stream);
    [LibraryImport(Library, EntryPoint = "cuEventSynchronize")] internal static partial int EventSynchronize(IntPtr cudaEvent);
    [LibraryImport(Library, EntryPoint = "cuEventElapsedTime")] internal static partial int EventElapsedTime(out float milliseconds, IntPtr start, IntPtr end);
    [LibraryImport(Library, EntryPoint = "cuEventDestroy_v2")] internal static partial int EventDestroy(IntPtr cudaEvent);
}

/// <summary>A CUDA driver call failed: the call, the driver's error name and number.</summary>
public sealed class CudaDriverException(string message, int error) : Exception(message)
{
    /// <summary>The CUresult (0 never).</summary>
    public int Error { get; } = error;

    // CUresult values with their own message.
    internal const int OutOfMemory = 2, NoDevice = 100, UnsupportedPtxVersion = 222, InvalidPtx = 218;

    internal static void Check(int rc, string call)
    {
        if (rc != 0) throw new CudaDriverException($"{call} failed: {Name(rc)} ({rc})", rc);
    }

    internal static string Name(int rc)
    {
        try
        {
            return CudaApi.GetErrorName(rc, out var name) == 0 && name != IntPtr.Zero ? Marshal.PtrToStringUTF8(name) ?? "?" : "CUDA_ERROR_UNKNOWN";
        }
        catch (DllNotFoundException)
        {
            return "CUDA_ERROR_UNKNOWN";
        }
    }
}

/// <summary>The NVIDIA driver is not installed (no libcuda.so.1 / nvcuda.dll) or too old for the precompiled PTX.</summary>
public sealed class CudaDriverUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
