// 16-bit casts shared by the products that read the same fp32 data, so it is rounded (and launched) once:
//   - an activation read by several linears (q, k and v on one normed x; gate and up): the model opens ShareHalfCast(x)
//     around them; the first cast is kept on x's storage until the scope closes (nothing writes x in between);
//   - LoRA's A and B, parameters that change only when written (CopyFrom, Clear, an optimizer step: Tensor.BumpVersion):
//     the kept cast is tagged with the storage's version and dropped at the write, so a forward and the checkpoint
//     recompute of a layer round them once per optimizer step; LoRA's backward, their last reader in a step, drops it.
// The kept copy is the plain CastRaw result, so every product sees the same bits as with a cast of its own; the tape
// saves references to it, which keep it alive after the cache lets go.
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

/// <summary>A kept 16-bit cast of a storage's data at <paramref name="Version"/> (owned by the storage).</summary>
internal sealed record HalfCopy(Tensor Copy, int Version);

internal sealed partial class Storage
{
    private int _version;

    /// <summary>Counts writes of the data; a kept 16-bit cast of an older version is stale.</summary>
    public int Version => Volatile.Read(ref _version);

    /// <summary>The 16-bit cast Ops.SharedCast keeps of this data.</summary>
    public HalfCopy? Half { get; set; }

    /// <summary>Open Ops.ShareHalfCast scopes over this data.</summary>
    public int ShareScopes { get; set; }

    public void Written()
    {
        Interlocked.Increment(ref _version);
        DropHalf();
    }

    public void DropHalf()
    {
        Half?.Copy.Dispose();
        Half = null;
    }
}

public static partial class Ops
{
    /// <summary>
    /// While the returned scope is open, the 16-bit products that read <paramref name="x"/> (Linear, LinearNf4, LoraLinear
    /// on tensor cores) share one cast of it. The caller must not write x inside the scope.
    /// </summary>
    public static IDisposable ShareHalfCast(Tensor x)
    {
        var s = x.SharedStorage;
        s.ShareScopes++;
        return new ShareScope(s);
    }

    private sealed class ShareScope(Storage storage) : IDisposable
    {
        private bool _closed;

        public void Dispose()
        {
            if (_closed) return;
            _closed = true;
            if (--storage.ShareScopes == 0) storage.DropHalf();
        }
    }

    // t fp32 -> a new reference to its cast to `to` (dispose it): the kept one when it is of t's current data, else a fresh
    // cast, kept when `keep` (a parameter) or a ShareHalfCast scope is open over t.
    internal static Tensor SharedCast(Tensor t, DType to, bool keep)
    {
        var s = t.SharedStorage;
        if (s.Half is { } h && h.Version == s.Version && h.Copy.DType == to && h.Copy.Length == t.Length) return h.Copy.Reshaped(t.Shape);
        var y = CastRaw(t, to);
        if (keep || s.ShareScopes > 0)
        {
            s.DropHalf();
            s.Half = new HalfCopy(y.Alias(), s.Version);
        }
        return y;
    }

    // Lets go of t's kept cast (references already handed out stay valid).
    internal static void DropSharedCast(Tensor t) => t.SharedStorage.DropHalf();
}
