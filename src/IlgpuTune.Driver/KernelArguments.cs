// The parameter ABI of ILGPU's kernels as the driver sees it: every parameter is a block of bytes laid out as the PTX
// entry declares (PtxSignature). An ArrayView<T> is {pointer, length in elements} (16 bytes, align 8), scalars are their
// own size, a struct is its unmanaged layout (ILGPU's PTX struct layout is the .NET sequential one). An implicitly grouped
// kernel takes the launch extent as its first parameter (ILGPU's bounds check).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace IlgpuTune.Driver;

/// <summary>A device array as a kernel parameter: the device address and the element count.</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct DeviceView(ulong Pointer, long Length);

/// <summary>Packs launch arguments against a kernel's parameter layout, checking each size; the result is cuLaunchKernel's kernelParams.</summary>
public sealed class KernelArguments
{
    private readonly IReadOnlyList<PtxParameter> _layout;
    private readonly string _kernel;
    private readonly byte[] _bytes;
    private readonly int[] _offsets;
    private int _count;

    public KernelArguments(string kernel, IReadOnlyList<PtxParameter> layout)
    {
        _kernel = kernel;
        _layout = layout;
        _offsets = new int[layout.Count];
        int offset = 0;
        for (int i = 0; i < layout.Count; i++)
        {
            offset = (offset + layout[i].Alignment - 1) / layout[i].Alignment * layout[i].Alignment;
            _offsets[i] = offset;
            offset += layout[i].Size;
        }
        _bytes = new byte[offset + 16]; // slack for aligning the pinned base
    }

    /// <summary>Parameters added so far.</summary>
    public int Count => _count;

    /// <summary>Appends one parameter of unmanaged type <typeparamref name="T"/> (a scalar, a <see cref="DeviceView"/>, a struct).</summary>
    public KernelArguments Add<T>(in T value) where T : unmanaged
    {
        if (_count == _layout.Count)
            throw new ArgumentException($"kernel {_kernel} takes {_layout.Count} parameters; one more ({typeof(T).Name}) was given");
        var p = _layout[_count];
        int size = Unsafe.SizeOf<T>();
        if (size != p.Size)
            throw new ArgumentException($"kernel {_kernel} parameter {_count}: {typeof(T).Name} is {size} bytes, the PTX entry takes {p.Size}");
        MemoryMarshal.Write(_bytes.AsSpan(_offsets[_count], size), in value);
        _count++;
        return this;
    }

    /// <summary>The packed bytes of parameter <paramref name="index"/> (for tests and diagnostics).</summary>
    public ReadOnlySpan<byte> Bytes(int index) => _bytes.AsSpan(_offsets[index], _layout[index].Size);

    /// <summary>Runs <paramref name="launch"/> with kernelParams: one pointer per parameter, each at its PTX alignment.</summary>
    internal unsafe void Pinned(Action<nint> launch)
    {
        if (_count != _layout.Count)
            throw new ArgumentException($"kernel {_kernel} takes {_layout.Count} parameters; {_count} were given");
        // A 16-byte aligned copy on the stack, so each parameter also sits at its declared alignment in host memory.
        int size = _bytes.Length - 16;
        byte* aligned = stackalloc byte[size + 16];
        aligned = (byte*)(((nint)aligned + 15) & ~(nint)15);
        _bytes.AsSpan(0, size).CopyTo(new Span<byte>(aligned, size));
        var pointers = stackalloc void*[Math.Max(1, _count)];
        for (int i = 0; i < _count; i++) pointers[i] = aligned + _offsets[i];
        launch((nint)pointers);
    }
}
