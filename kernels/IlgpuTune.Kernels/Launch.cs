// Launch shapes shared by the flat (element-wise) kernels, and the host-side size checks every launcher makes:
// an out-of-bounds view access corrupts memory on CUDA and kills the process on the CPU accelerator.
using ILGPU;
using ILGPU.Runtime;

// ILGPU's CPU accelerator emits a dynamic assembly that must see internal kernel parameter structs (MatMul.Layout).
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("ILGPURuntime")]

namespace IlgpuTune.Kernels;

internal static class Launch
{
    /// <summary>Grid-stride launch over n elements: groups of k.RowGroupSize, capped so huge n reuse threads.</summary>
    public static KernelConfig Flat(KernelRegistry k, long n) => Flat(k.Target, n);

    /// <inheritdoc cref="Flat(KernelRegistry, long)"/>
    public static KernelConfig Flat(LaunchTarget t, long n)
    {
        int group = t.RowGroupSize;
        long groups = Math.Clamp((n + group - 1) / group, 1, t.Emulated ? 8 : 1 << 16);
        return new KernelConfig((int)groups, group);
    }

    /// <summary>Device side of <see cref="Flat"/>: total threads in the grid, the step of a grid-stride loop.</summary>
    public static long GridStride() => (long)Grid.DimX * Group.DimX;

    /// <summary>
    /// True when every non-empty view starts on a 16-byte boundary, so its Cast&lt;Float4&gt;() gives aligned
    /// ld/st.global.v4 (16-byte vector accesses must be aligned on the GPU).
    /// </summary>
    public static bool Aligned16(params ReadOnlySpan<FloatView> views)
    {
        foreach (var v in views)
            if (!AlignedTo(v, 16)) return false;
        return true;
    }

    /// <summary>Whether the view's first element sits on a multiple of <paramref name="bytes"/> in device memory.</summary>
    public static bool AlignedTo<T>(ArrayView<T> view, int bytes) where T : unmanaged =>
        view.Length == 0 || (((IArrayView)view).Buffer.NativePtr.ToInt64() + ((IContiguousArrayView)view).IndexInBytes) % bytes == 0;

    /// <summary><see cref="AlignedTo"/> for a raw device address of a view of <paramref name="length"/> elements.</summary>
    public static bool AlignedTo(ulong address, long length, int bytes) => length == 0 || address % (ulong)bytes == 0;

    /// <summary>Throws unless <paramref name="view"/> holds at least <paramref name="count"/> elements.</summary>
    public static void Need<T>(ArrayView<T> view, long count, string name) where T : unmanaged
    {
        if (count < 0) throw new ArgumentOutOfRangeException(name, count, $"{name}: negative size");
        if (view.Length < count) throw new ArgumentException($"{name} has {view.Length} elements, {count} needed", name);
    }
}
