using System.Runtime.InteropServices;
using IlgpuTune.Driver;
using IlgpuTune.Kernels;
using IlgpuTune.Kernels.Ptx;

namespace IlgpuTune.Driver.Tests;

// The driver runtime's parts that need no GPU: packing launch arguments, the manifest, the caching allocator, and the
// error when the driver is missing. (Launching on a GPU is checked on the GPU machine.)
public class DriverRuntimeTests
{
    [Fact]
    public void ArgumentsArePackedAtTheirPtxOffsets()
    {
        // elementwise.sumrows(Index1D extent, ArrayView<float> dY, int rows, int cols, ArrayView<float> dBias)
        var entry = PrecompiledPtx.Library.Find("sm_80", "elementwise.sumrows")!;
        Assert.True(entry.ImplicitlyGrouped);
        Assert.Equal("4@4,16@8,4@4,4@4,16@8", string.Join(',', entry.Parameters));
        var args = new KernelArguments(entry.Name, entry.Parameters)
            .Add(100).Add(new DeviceView(0x7000_0000_1000, 1200)).Add(12).Add(100).Add(new DeviceView(0x7000_0000_9000, 100));
        Assert.Equal(5, args.Count);
        Assert.Equal(BitConverter.GetBytes(100), args.Bytes(0).ToArray());
        Assert.Equal([.. BitConverter.GetBytes(0x7000_0000_1000UL), .. BitConverter.GetBytes(1200L)], args.Bytes(1).ToArray());
        Assert.Equal(BitConverter.GetBytes(100), args.Bytes(3).ToArray());
        Assert.Equal([.. BitConverter.GetBytes(0x7000_0000_9000UL), .. BitConverter.GetBytes(100L)], args.Bytes(4).ToArray());
    }

    [Fact]
    public void WrongArgumentsAreNamed()
    {
        var entry = PrecompiledPtx.Library.Find("sm_80", "elementwise.sumrows")!;
        var e = Assert.Throws<ArgumentException>(() => new KernelArguments(entry.Name, entry.Parameters).Add(1L));
        Assert.Equal("kernel elementwise.sumrows parameter 0: Int64 is 8 bytes, the PTX entry takes 4", e.Message);
        var full = new KernelArguments("k", [new PtxParameter(4, 4)]).Add(1);
        Assert.Equal("kernel k takes 1 parameters; one more (Int32) was given", Assert.Throws<ArgumentException>(() => full.Add(2)).Message);
    }

    [Fact]
    public void PtxSignatureReadsEntryAndLayout()
    {
        const string ptx = ".version 8.0\n.target sm_80\n.shared .align 4 .b8 __shared_alloca0[128];\n.extern .shared .align 4 .b8 __dyn_shared_alloca[];\n" +
            ".visible .entry Kernel_X(\n\t.param .b32 _c_0,\n\t.param .align 8 .b8 _v_1[16],\n\t.param .b64 _n_2\n)\n{\n}\n";
        var s = PtxSignature.Parse(ptx);
        Assert.Equal("Kernel_X", s.Entry);
        Assert.Equal([new PtxParameter(4, 4), new PtxParameter(16, 8), new PtxParameter(8, 8)], s.Parameters);
        Assert.Equal((128, true), (s.StaticShared, s.DynamicShared));
        Assert.Throws<FormatException>(() => PtxSignature.Parse(".version 8.0\n"));
    }

    [Fact]
    public void ManifestLinesRoundTripAndBadLinesNameTheLine()
    {
        var entry = PrecompiledPtx.Library.Find("sm_90", "rmsnorm.forward")!;
        Assert.Equal(entry, PtxEntry.Parse(entry.ToLine(), 1) with { Parameters = entry.Parameters });
        Assert.Equal(entry.Parameters, PtxEntry.Parse(entry.ToLine(), 1).Parameters);
        var e = Assert.Throws<InvalidDataException>(() => PtxEntry.Parse("sm_80\tx\tfile", 7));
        Assert.StartsWith("manifest.tsv line 7: expected 11 tab-separated fields", e.Message);
        var bad = Assert.Throws<InvalidDataException>(() => PtxEntry.Parse(entry.ToLine().Replace("16@8", "16@3"), 3));
        Assert.StartsWith("manifest.tsv line 3: PTX parameter '16@3'", bad.Message);
    }

    [Fact]
    public void ResourceLookupMissesByArchitectureAndName()
    {
        Assert.Null(PrecompiledPtx.Library.Find("sm_80", "no.such.kernel"));
        var wgmma = KernelCatalogue.Cuda.First(k => k.Target == KernelTarget.Sm90a);
        Assert.Null(PrecompiledPtx.Library.Find("sm_80", wgmma.Name));
        var hopper = PrecompiledPtx.Library.Find("sm_90", wgmma.Name)!;
        Assert.Contains(".target sm_90a", PrecompiledPtx.Library.Text(hopper));
        Assert.Contains(".version 8.0", PrecompiledPtx.Library.Text(hopper));
        var e = Assert.Throws<InvalidDataException>(() => PtxLibrary.FromAssembly(typeof(DriverRuntimeTests).Assembly));
        Assert.Equal("assembly IlgpuTune.Driver.Tests holds no precompiled PTX (resource ptx/manifest.tsv missing)", e.Message);
    }

    [Fact]
    public void MissingDriverIsOneClearError()
    {
        if (NativeLibrary.TryLoad(OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1", out var handle))
        {
            NativeLibrary.Free(handle);
            return; // a machine with the driver: the GPU checks cover opening it
        }
        var e = Assert.Throws<CudaDriverUnavailableException>(() => DriverDevice.Open(PrecompiledPtx.Library, AheadOfTimePtx.MinimumDriver));
        Assert.Equal("the NVIDIA driver is not installed (libcuda.so.1 not found); install the NVIDIA driver, or run on the CPU", e.Message);
    }

    [Fact]
    public void CachingAllocatorReusesBlocksByRoundedSize()
    {
        ulong next = 0x1000;
        var allocated = new List<long>();
        var freed = new List<ulong>();
        using var a = new CachingDeviceAllocator(bytes => { allocated.Add(bytes); return next += 0x10_0000_0000; }, freed.Add);
        ulong p = a.Rent(1000);
        Assert.Equal([1024L], allocated);
        a.Return(p);
        Assert.Equal(p, a.Rent(700)); // same 1024-byte granule class
        Assert.Single(allocated);
        ulong big = a.Rent(3 << 20);
        Assert.Equal(4L << 20, allocated[^1]);
        Assert.Equal((1024L + (4 << 20), 1024L + (4 << 20)), (a.InUse, a.Reserved));
        a.Return(big);
        Assert.Equal(1024L, a.InUse);
        Assert.Throws<InvalidOperationException>(() => a.Return(big));
        a.ReleaseCached();
        Assert.Equal([big], freed);
        Assert.Equal(1024L, a.Reserved);
    }

    [Fact]
    public void OutOfMemoryReleasesTheCacheAndRetriesOnce()
    {
        long budget = 4096, used = 0;
        ulong next = 0;
        using var a = new CachingDeviceAllocator(bytes =>
        {
            if (used + bytes > budget) throw new CudaDriverException("cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2)", 2);
            used += bytes;
            return next += 0x10000;
        }, _ => used -= 512 * 4);
        var cached = a.Rent(2048);
        a.Rent(2048);
        a.Return(cached);
        ulong p = a.Rent(1536); // another size class: fits only once the cached 2048 block is freed
        Assert.NotEqual(0UL, p);
        Assert.Throws<CudaDriverException>(() => a.Rent(4096));
    }
}
