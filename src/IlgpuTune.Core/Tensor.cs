// A contiguous, row-major tensor on a Device. Storage is reference-counted: Alias/Reshape share it, Dispose releases one
// reference, and the block returns to the caching allocator when the last reference goes. Device memory is never left to
// GC finalizers: whoever creates a tensor disposes it (or hands it to the tape, which does).
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class Storage(Device device, Block block)
{
    private int _refs = 1;

    public Device Device { get; } = device;
    public Block Block { get; } = block;

    public bool IsShared => Volatile.Read(ref _refs) > 1;

    /// <summary>Work on another stream still writing these bytes: the default stream waits for it before the next use.</summary>
    public PendingWrite? PendingWrite { get; set; }

    public void Retain() => Interlocked.Increment(ref _refs);

    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        DropHalf();
        if (Block.External is { } external) ((IDisposable)external).Dispose();
        else Device.Allocator.Return(Block);
    }
}

public sealed class Tensor : IDisposable
{
    private readonly Storage _storage;
    private bool _disposed;

    private Tensor(Storage storage, DType dtype, int[] shape)
    {
        _storage = storage;
        DType = dtype;
        Shape = shape;
        Length = ShapeLength(shape);
    }

    public Device Device => _storage.Device;
    public DType DType { get; }
    public int[] Shape { get; }
    public long Length { get; }
    public long Bytes => Length * DType.Size();
    public int Rank => Shape.Length;

    /// <summary>Gradients flow to this tensor (parameters, and every op output that depends on one).</summary>
    public bool RequiresGrad { get; set; }

    /// <summary>Accumulated gradient of a leaf tensor (a parameter), filled by Tape.Backward.</summary>
    public Tensor? Grad { get; set; }

    /// <summary>A name for messages (the HF key for parameters).</summary>
    public string? Name { get; set; }

    public bool IsDisposed => _disposed;

    /// <summary>True when another tensor (an alias) shares this storage, so in-place writes would be seen there too.</summary>
    public bool IsStorageShared => _storage.IsShared;

    /// <summary>Counts writes of this tensor's data (shared by its aliases): CopyFrom, Clear and <see cref="BumpVersion"/>.</summary>
    public int Version => _storage.Version;

    /// <summary>
    /// Call after writing a parameter's data in place other than by CopyFrom / Clear (an optimizer step, a copy into it):
    /// a 16-bit cast kept of the old data (LoRA's A and B, Ops.SharedCast) is dropped and cast again at its next use.
    /// </summary>
    public void BumpVersion() => _storage.Written();

    internal Storage SharedStorage => _storage;

    public int Dim(int i) => Shape[i < 0 ? Shape.Length + i : i];

    public static long ShapeLength(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape.ToArray())}]");
            n = checked(n * d);
        }
        return n;
    }

    public static Tensor Empty(Device device, DType dtype, params int[] shape)
    {
        long bytes = Math.Max(1, ShapeLength(shape) * dtype.Size());
        return new Tensor(new Storage(device, device.Allocator.Rent(bytes)), dtype, (int[])shape.Clone());
    }

    public static Tensor Zeros(Device device, DType dtype, params int[] shape)
    {
        var t = Empty(device, dtype, shape);
        t.Clear();
        return t;
    }

    public static Tensor FromArray(Device device, ReadOnlySpan<float> data, params int[] shape)
    {
        var t = Empty(device, DType.F32, shape);
        if (data.Length != t.Length)
        {
            t.Dispose();
            throw new ArgumentException($"{data.Length} floats given for a tensor of shape [{string.Join(", ", shape)}] ({t.Length} elements)");
        }
        t.CopyFrom(data);
        return t;
    }

    // Host copies go in pieces: a span of bytes cannot describe 2 GiB or more (an fp32 lm_head of 152k x 4096 is 2.3 GiB).
    private const int CopyChunkFloats = 1 << 28;

    public static Tensor FromArray(Device device, ReadOnlySpan<int> data, params int[] shape) =>
        FromBytes(device, DType.I32, MemoryMarshal.AsBytes(data), shape);

    public static Tensor FromBytes(Device device, DType dtype, ReadOnlySpan<byte> data, params int[] shape)
    {
        var t = Empty(device, dtype, shape);
        if (data.Length != t.Bytes)
        {
            t.Dispose();
            throw new ArgumentException($"{data.Length} bytes given for a {dtype} tensor of shape [{string.Join(", ", shape)}] ({ShapeLength(shape) * dtype.Size()} bytes)");
        }
        t.CopyFrom(data);
        return t;
    }

    /// <summary>
    /// A tensor over host memory it does not copy (the managed CPU path only): e.g. a weight viewing its memory-mapped
    /// safetensors bytes as stored (read-only memory: such a tensor is a frozen weight and is never written). Takes ownership
    /// of <paramref name="memory"/>, disposed with the last alias. Outside the caching allocator's counters (file pages are
    /// reclaimable, not allocated).
    /// </summary>
    public static Tensor ViewHost(Device device, DType dtype, System.Buffers.MemoryManager<byte> memory, params int[] shape)
    {
        long bytes = ShapeLength(shape) * dtype.Size();
        string? problem = device.Accelerator is not null ? $"device {device.Kind} keeps tensors in its own memory"
            : memory.Memory.Length != bytes ? $"{memory.Memory.Length} bytes given for a {dtype} tensor of shape [{string.Join(", ", shape)}] ({bytes} bytes)"
            : null;
        if (problem is not null)
        {
            ((IDisposable)memory).Dispose();
            throw new ArgumentException($"host view: {problem}");
        }
        return new Tensor(new Storage(device, Block.Wrap(memory)), dtype, (int[])shape.Clone());
    }

    /// <summary>A tensor holding <paramref name="data"/>: the array itself on the managed CPU path (no copy; the caller must
    /// not change it afterwards), a copy on an accelerator.</summary>
    public static Tensor Adopt(Device device, DType dtype, byte[] data, params int[] shape) =>
        device.Accelerator is null ? ViewHost(device, dtype, new ArrayBytes(data), shape) : FromBytes(device, dtype, data, shape);

    // A managed array as host memory that nothing needs to free.
    private sealed class ArrayBytes(byte[] data) : System.Buffers.MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => data;

        public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => throw new NotSupportedException("host tensors are not pinned");

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }
    }

    /// <summary>A second reference to the same storage (shares data; dispose it separately). Not tracked by autograd.</summary>
    public Tensor Alias() => Reshaped(Shape);

    /// <summary>The same storage under another shape with the same element count. Not tracked by autograd (see Ops.Reshape).</summary>
    public Tensor Reshaped(params int[] shape)
    {
        ThrowIfDisposed();
        if (ShapeLength(shape) != Length)
            throw new ArgumentException($"cannot view [{string.Join(", ", Shape)}] as [{string.Join(", ", shape)}]");
        _storage.Retain();
        return new Tensor(_storage, DType, (int[])shape.Clone()) { Name = Name };
    }

    /// <summary>
    /// Work on another stream writes this tensor: the next launch or copy that takes its view waits for it first (on the
    /// default stream), and so does <see cref="SettlePendingWrite"/>.
    /// </summary>
    internal void SetPendingWrite(PendingWrite pending)
    {
        ThrowIfDisposed();
        _storage.PendingWrite?.Settle();
        _storage.PendingWrite = pending;
    }

    /// <summary>Orders the default stream after a pending write, if there is one.</summary>
    internal void SettlePendingWrite()
    {
        if (_storage.PendingWrite is not { } pending) return;
        _storage.PendingWrite = null;
        pending.Settle();
    }

    // ---- raw access ----

    // Where the storage lives: host memory (the managed CPU path, owned or a view of mapped file bytes), driver memory
    // (DriverBackend) or an accelerator buffer.
    private bool OnHost => _storage.Block.Host is not null || _storage.Block.External is not null;

    private bool OnDriver => _storage.Block.Pointer != 0;

    /// <summary>The device address of the first element on a GPU opened through the driver runtime (DriverBackend).</summary>
    internal ulong DevicePointer
    {
        get
        {
            ThrowIfDisposed();
            return OnDriver ? _storage.Block.Pointer : throw new InvalidOperationException($"tensor {Name} does not live in driver memory");
        }
    }

    /// <summary>The bytes on the managed CPU path, whatever the dtype (backends' copies).</summary>
    internal Span<byte> RawHostBytes => HostBytes;

    /// <summary>The bytes on an accelerator, whatever the dtype (backends' copies).</summary>
    internal ArrayView<byte> RawDeviceBytes => DeviceBytes;

    private Span<byte> HostBytes
    {
        get
        {
            ThrowIfDisposed();
            var block = _storage.Block;
            if (block.External is { } external) return external.GetSpan()[..checked((int)Bytes)];
            var host = block.Host ?? throw new InvalidOperationException($"tensor {Name} lives on {Device.Kind}, not the managed CPU path");
            return host.AsSpan(0, checked((int)Bytes));
        }
    }

    private ArrayView<byte> DeviceBytes
    {
        get
        {
            ThrowIfDisposed();
            var buffer = _storage.Block.Buffer ?? throw new InvalidOperationException($"tensor {Name} lives on the managed CPU path");
            // Every launch and copy gets its view here, so this is where the default stream waits for an update in flight
            // (the paged optimizer's, which overlaps the next forward pass).
            SettlePendingWrite();
            return buffer.View.SubView(0, Math.Max(Bytes, 1));
        }
    }

    /// <summary>Elements on the managed CPU path.</summary>
    public Span<T> Span<T>() where T : unmanaged
    {
        CheckElement<T>();
        return MemoryMarshal.Cast<byte, T>(HostBytes);
    }

    public Span<float> F32 => Span<float>();
    public Span<int> I32 => Span<int>();

    /// <summary>Elements on an ILGPU accelerator.</summary>
    public ArrayView<T> View<T>() where T : unmanaged
    {
        CheckElement<T>();
        return Length == 0 ? DeviceBytes.Cast<T>().SubView(0, 0) : DeviceBytes.Cast<T>().SubView(0, Length);
    }

    public ArrayView<float> F32View => View<float>();
    public ArrayView<int> I32View => View<int>();

    private void CheckElement<T>() where T : unmanaged
    {
        bool ok = DType switch
        {
            DType.F32 => typeof(T) == typeof(float),
            DType.I32 => typeof(T) == typeof(int),
            DType.F16 or DType.BF16 => typeof(T) == typeof(ushort),
            DType.U8 => typeof(T) == typeof(byte),
            _ => false,
        };
        if (!ok) throw new InvalidOperationException($"tensor {Name} is {DType}, not {typeof(T).Name}");
    }

    public void CopyFrom(ReadOnlySpan<byte> data)
    {
        if (data.Length != Bytes) throw new ArgumentException($"expected {Bytes} bytes, got {data.Length}");
        _storage.Written();
        if (OnHost) data.CopyTo(HostBytes);
        else if (OnDriver) Device.Driver!.CopyToDevice(data, DevicePointer);
        else if (data.Length > 0) DeviceBytes.SubView(0, data.Length).CopyFromCPU(data);
    }

    public void CopyFrom(ReadOnlySpan<float> data)
    {
        if (DType != DType.F32 || data.Length != Length)
            throw new ArgumentException($"expected {Length} F32 values for tensor {Name}, got {data.Length} floats ({DType})");
        _storage.Written();
        if (OnHost) { data.CopyTo(F32); return; }
        if (OnDriver)
        {
            for (int off = 0; off < data.Length; off += CopyChunkFloats)
                Device.Driver!.CopyToDevice(MemoryMarshal.AsBytes(data.Slice(off, Math.Min(CopyChunkFloats, data.Length - off))), DevicePointer + (ulong)off * 4);
            return;
        }
        var view = DeviceBytes.Cast<float>();
        for (int off = 0; off < data.Length; off += CopyChunkFloats)
        {
            int n = Math.Min(CopyChunkFloats, data.Length - off);
            view.SubView(off, n).CopyFromCPU(data.Slice(off, n));
        }
    }

    public void CopyTo(Span<byte> destination)
    {
        if (destination.Length != Bytes) throw new ArgumentException($"expected {Bytes} bytes, got {destination.Length}");
        if (OnHost) HostBytes.CopyTo(destination);
        else if (OnDriver) Device.Driver!.CopyFromDevice(DevicePointer, destination);
        else if (Bytes > 0) DeviceBytes.SubView(0, Bytes).CopyToCPU(destination);
    }

    /// <summary>A copy with its own storage (no autograd).</summary>
    public Tensor Clone()
    {
        var c = Empty(Device, DType, Shape);
        Device.Backend.Copy(this, 0, c, 0, Length);
        c.Name = Name;
        return c;
    }

    public byte[] ToBytes()
    {
        var b = new byte[Bytes];
        CopyTo(b);
        return b;
    }

    /// <summary>Copies to the host as float32 (bf16/f16 widened exactly).</summary>
    public float[] ToFloatArray()
    {
        if (DType == DType.F32 && OnDriver)
        {
            var f = new float[Length];
            for (int off = 0; off < f.Length; off += CopyChunkFloats)
                Device.Driver!.CopyFromDevice(DevicePointer + (ulong)off * 4, MemoryMarshal.AsBytes(f.AsSpan(off, Math.Min(CopyChunkFloats, f.Length - off))));
            return f;
        }
        if (DType == DType.F32 && !OnHost)
        {
            var f = new float[Length];
            var view = DeviceBytes.Cast<float>();
            for (int off = 0; off < f.Length; off += CopyChunkFloats)
            {
                int n = Math.Min(CopyChunkFloats, f.Length - off);
                view.SubView(off, n).CopyToCPU(f.AsSpan(off, n));
            }
            return f;
        }
        var bytes = ToBytes();
        switch (DType)
        {
            case DType.F32: return MemoryMarshal.Cast<byte, float>(bytes).ToArray();
            case DType.BF16:
            {
                var u = MemoryMarshal.Cast<byte, ushort>(bytes);
                var f = new float[u.Length];
                for (int i = 0; i < f.Length; i++) f[i] = HalfBits.Bf16ToFloat(u[i]);
                return f;
            }
            case DType.F16:
            {
                var u = MemoryMarshal.Cast<byte, ushort>(bytes);
                var f = new float[u.Length];
                for (int i = 0; i < f.Length; i++) f[i] = HalfBits.F16ToFloat(u[i]);
                return f;
            }
            case DType.I32: return MemoryMarshal.Cast<byte, int>(bytes).ToArray().Select(i => (float)i).ToArray();
            default: return bytes.Select(b => (float)b).ToArray();
        }
    }

    public int[] ToIntArray() => DType == DType.I32
        ? MemoryMarshal.Cast<byte, int>(ToBytes()).ToArray()
        : throw new InvalidOperationException($"tensor {Name} is {DType}, not I32");

    /// <summary>A scalar (one-element) tensor's value.</summary>
    public float Item() => Length == 1 ? ToFloatArray()[0] : throw new InvalidOperationException($"Item() on a tensor of {Length} elements");

    public void Clear()
    {
        _storage.Written();
        if (OnHost) HostBytes.Clear();
        else if (OnDriver) Device.Driver!.Zero(DevicePointer, Bytes);
        else DeviceBytes.MemSetToZero(Device.Accelerator!.DefaultStream);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _storage.Release();
    }

    public override string ToString() => $"Tensor({Name ?? "?"}, {DType}, [{string.Join(", ", Shape)}], {Device.Kind})";
}

public static class TensorExtensions
{
    /// <summary>Sets the name (for messages and checkpoint keys) and returns the tensor.</summary>
    public static Tensor Named(this Tensor t, string name)
    {
        t.Name = name;
        return t;
    }
}
