// The keys and values (after RoPE) of every token a model has seen, per layer, on the model's device:
//   keys[layer], values[layer]: [capacity, numKvHeads * headDim], rows 0..Length-1 valid.
// CausalLM.ForwardCached appends a step's rows to every layer, then advances Length. Capacity grows by doubling.
using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model.Generation;

public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _keys, _values;

    public KvCache(ModelConfig config, Device device, int capacity = 256)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Device = device;
        Width = config.NumKeyValueHeads * config.HeadDim;
        Capacity = capacity;
        _keys = new Tensor[config.NumHiddenLayers];
        _values = new Tensor[config.NumHiddenLayers];
        for (int l = 0; l < _keys.Length; l++)
        {
            _keys[l] = Tensor.Empty(device, DType.F32, capacity, Width);
            _values[l] = Tensor.Empty(device, DType.F32, capacity, Width);
        }
    }

    public Device Device { get; }
    public int Layers => _keys.Length;
    /// <summary>numKvHeads * headDim: the length of one cached row.</summary>
    public int Width { get; }
    public int Capacity { get; private set; }
    /// <summary>Cached tokens (the next token's position).</summary>
    public int Length { get; private set; }

    /// <summary>Layer <paramref name="layer"/>'s keys [Capacity, Width]; rows past Length are garbage.</summary>
    public Tensor Keys(int layer) => _keys[layer];

    public Tensor Values(int layer) => _values[layer];

    /// <summary>Forgets every token (keeps the memory).</summary>
    public void Clear() => Length = 0;

    /// <summary>Forgets the tokens from position <paramref name="length"/> on.</summary>
    public void Truncate(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Length);
        Length = length;
    }

    /// <summary>Makes room for <paramref name="tokens"/> tokens in all, keeping the cached rows.</summary>
    public void Reserve(int tokens)
    {
        if (tokens <= Capacity) return;
        int capacity = Math.Max(tokens, checked(Capacity * 2));
        for (int l = 0; l < _keys.Length; l++)
        {
            _keys[l] = Grown(_keys[l], capacity);
            _values[l] = Grown(_values[l], capacity);
        }
        Capacity = capacity;
    }

    private Tensor Grown(Tensor old, int capacity)
    {
        using (old)
        {
            var t = Tensor.Empty(Device, DType.F32, capacity, Width);
            CopyRows(old, 0, Length, t, 0);
            return t;
        }
    }

    // k, v[n, Width] become rows Length..Length+n-1 of the layer (Length moves only in Advance, after the last layer).
    internal void Write(int layer, Tensor k, Tensor v)
    {
        int n = k.Dim(0);
        if (k.Rank != 2 || k.Dim(1) != Width || v.Rank != 2 || v.Dim(0) != n || v.Dim(1) != Width)
            throw new ArgumentException($"kv cache: k [{string.Join(", ", k.Shape)}] / v [{string.Join(", ", v.Shape)}] are not [n, {Width}]");
        if (Length + n > Capacity) throw new InvalidOperationException($"kv cache holds {Capacity} tokens; Reserve({Length + n}) first");
        CopyRows(k, 0, n, _keys[layer], Length);
        CopyRows(v, 0, n, _values[layer], Length);
    }

    internal void Advance(int n) => Length += n;

    /// <summary>Copies rows [first, first+count) of <paramref name="src"/> to rows from <paramref name="dstRow"/> of
    /// <paramref name="dst"/> (both F32, same row length).</summary>
    internal static void CopyRows(Tensor src, int first, int count, Tensor dst, int dstRow)
    {
        long width = src.Length / Math.Max(src.Dim(0), 1);
        if (first < 0 || count < 0 || dstRow < 0 || first + count > src.Dim(0) || dstRow + count > dst.Dim(0) || dst.Length != dst.Dim(0) * width)
            throw new ArgumentException($"cannot copy rows [{first}, {first + count}) of [{string.Join(", ", src.Shape)}] to row {dstRow} of [{string.Join(", ", dst.Shape)}]");
        if (count == 0) return;
        src.Device.Backend.Copy(src, first * width, dst, dstRow * width, count * width);
    }

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values)) t.Dispose();
    }
}
