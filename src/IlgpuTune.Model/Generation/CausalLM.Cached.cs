// Inference forward over a KV cache: new tokens at positions cache.Length.. attend to everything cached before them,
// with the same layers (and LoRA branches) as CausalLM.Forward, under Tape.NoGrad and without dropout.
// RoPE positions continue from the cache length. For rope_scaling "dynamic" the theta of a step follows that step's last
// position, as transformers' cached generation does (so past max_position_embeddings earlier keys keep their older theta).
using IlgpuTune.Core;
using IlgpuTune.Model.Generation;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed partial class CausalLM
{
    /// <summary>
    /// Runs <paramref name="inputIds"/> (n new tokens) after the <paramref name="cache"/>'s tokens and appends their keys and
    /// values to it. Returns logits [n, vocab] with <paramref name="allPositions"/>, else [1, vocab] of the last token.
    /// </summary>
    public Tensor ForwardCached(IReadOnlyList<int> inputIds, KvCache cache, bool allPositions = false)
    {
        var c = Config;
        int n = inputIds.Count, start = cache.Length;
        if (n == 0) throw new ArgumentException("ForwardCached needs at least one new token", nameof(inputIds));
        if (!ReferenceEquals(cache.Device, Device) || cache.Layers != Layers.Length || cache.Width != c.NumKeyValueHeads * c.HeadDim)
            throw new ArgumentException($"the kv cache ({cache.Layers} layers × {cache.Width}) was not made for this model on {Device.Kind}");
        var ids = inputIds.ToArray();
        for (int i = 0; i < n; i++)
            if ((uint)ids[i] >= (uint)c.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(inputIds), $"input id {ids[i]} at position {i} is outside the vocabulary [0, {c.VocabSize})");

        using var noGrad = Tape.NoGrad();
        cache.Reserve(start + n);
        var positions = new int[n];
        for (int i = 0; i < n; i++) positions[i] = start + i;
        using var idsT = Tensor.FromArray(Device, ids, n);
        using var rope = new RopeTables(this, positions);

        var h = Embed(idsT, ids);
        for (int l = 0; l < Layers.Length; l++)
        {
            int layer = l;
            var (cos, sin) = rope.For(Layers[l]);
            var next = Block(Layers[l], h, cos, sin, rng: null, (q, k, v) =>
            {
                cache.Write(layer, k, v);
                return CachedAttention(Layers[layer], q, cache.Keys(layer), cache.Values(layer), start, n);
            });
            h.Dispose();
            h = next;
        }
        cache.Advance(n);
        if (!allPositions && n > 1)
        {
            var last = Tensor.Empty(Device, DType.F32, 1, c.HiddenSize);
            KvCache.CopyRows(h, n - 1, 1, last, 0);
            h.Dispose();
            h = last;
        }
        using (h)
        using (var normed = RmsNorm(h, Norm))
            return Ops.Linear(normed, LmHead);
    }

    // q[n, heads*headDim] at positions start.. over cached keys/values [capacity, kvHeads*headDim] -> o[n, heads*headDim]
    private Tensor CachedAttention(DecoderLayer layer, Tensor q, Tensor keys, Tensor values, int start, int n)
    {
        var c = Config;
        var o = Tensor.Empty(Device, DType.F32, q.Shape);
        Device.Backend.AttentionWithCache(q, keys, values, start, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, o,
            c.SlidingWindow(layer.Index), AttentionScale);
        return o;
    }
}
