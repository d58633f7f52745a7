// The weight schema: every checkpoint key with its shape, derived from the config's ArchitectureSpec, and the column
// maps that split fused projections. The loader checks a checkpoint against it; the decoder finds its tensors by it.
using IlgpuTune.Core;

namespace IlgpuTune.Model;

public sealed partial class CausalLM
{
    /// <summary>Every weight key with its shape, as transformers names them for this config, in checkpoint order.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> ExpectedWeights(ModelConfig c)
    {
        var s = c.Spec;
        int h = c.HiddenSize, qOut = c.NumAttentionHeads * c.HeadDim, kvOut = c.NumKeyValueHeads * c.HeadDim, inter = c.IntermediateSize;
        var list = new List<(string, int[])> { (s.Embed, [c.VocabSize, h]) };
        void Lin(string module, int outF, int inF, bool bias)
        {
            list.Add((module + ".weight", [outF, inF]));
            if (bias) list.Add((module + ".bias", [outF]));
        }
        void Norm(string? module, int dim)
        {
            if (module is not null) list.Add((module + ".weight", [dim]));
        }
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string L(string m) => s.Layer(i, m);
            Norm(L(s.InputNorm), h);
            if (s.QkvLayout == QkvLayout.Separate)
            {
                Lin(L(s.Q), qOut, h, c.AttentionBias);
                Lin(L(s.K), kvOut, h, c.AttentionBias);
                Lin(L(s.V), kvOut, h, c.AttentionBias);
            }
            else Lin(L(s.Qkv!), qOut + 2 * kvOut, h, c.AttentionBias);
            Lin(L(s.O), h, qOut, c.OutputBias);
            if (s.QNorm is not null)
            {
                Norm(L(s.QNorm), c.HeadDim);
                Norm(L(s.KNorm!), c.HeadDim);
            }
            Norm(L(s.PostAttentionNorm), h);
            if (s.PreFeedforwardNorm is not null) Norm(L(s.PreFeedforwardNorm), h);
            if (s.PostFeedforwardNorm is not null) Norm(L(s.PostFeedforwardNorm), h);
            if (c.IsSparseLayer(i))
            {
                var moe = c.Moe!;
                Lin(L(s.Router!), moe.NumExperts, h, false);
                for (int e = 0; e < moe.NumExperts; e++)
                {
                    string x = L($"{s.Experts}.{e}.");
                    Lin(x + s.ExpertGate, moe.ExpertIntermediateSize, h, false);
                    Lin(x + s.ExpertUp, moe.ExpertIntermediateSize, h, false);
                    Lin(x + s.ExpertDown, h, moe.ExpertIntermediateSize, false);
                }
                continue;
            }
            if (s.GateUp is not null) Lin(L(s.GateUp), 2 * inter, h, c.MlpBias);
            else
            {
                Lin(L(s.Gate), inter, h, c.MlpBias);
                Lin(L(s.Up), inter, h, c.MlpBias);
            }
            Lin(L(s.Down), h, inter, c.MlpBias);
        }
        list.Add((s.FinalNorm, [h]));
        if (!c.TieWordEmbeddings) list.Add((s.Head, [c.VocabSize, h]));
        return list;
    }

    /// <summary>Decoder linear weights (quantizable, LoRA targets): the 2-D weights other than the embedding and the head.</summary>
    public static bool IsDecoderLinear(ModelConfig c, string name, int[] shape) =>
        shape.Length == 2 && name != c.Spec.Embed && name != c.Spec.Head;

    /// <summary>Column indices of q, k and v inside a fused projection's output.</summary>
    public static (int[] Q, int[] K, int[] V) FusedQkvColumns(ModelConfig c) => c.Spec.QkvLayout switch
    {
        QkvLayout.GroupedPerKvHead => WqkvColumns(c),
        QkvLayout.Concatenated => (Range(0, c.NumAttentionHeads * c.HeadDim),
            Range(c.NumAttentionHeads * c.HeadDim, c.NumKeyValueHeads * c.HeadDim),
            Range((c.NumAttentionHeads + c.NumKeyValueHeads) * c.HeadDim, c.NumKeyValueHeads * c.HeadDim)),
        _ => throw new InvalidOperationException($"{c.Architecture} has separate q/k/v projections"),
    };

    /// <summary>Column indices of q, k and v inside InternLM2's wqkv output ([nKV, G+2, D] grouping).</summary>
    public static (int[] Q, int[] K, int[] V) WqkvColumns(ModelConfig c)
    {
        int g = c.KvGroups, d = c.HeadDim;
        var q = new int[c.NumAttentionHeads * d];
        var k = new int[c.NumKeyValueHeads * d];
        var v = new int[c.NumKeyValueHeads * d];
        for (int head = 0; head < c.NumAttentionHeads; head++)
            for (int j = 0; j < d; j++)
                q[head * d + j] = ((head / g) * (g + 2) + head % g) * d + j;
        for (int kv = 0; kv < c.NumKeyValueHeads; kv++)
            for (int j = 0; j < d; j++)
            {
                k[kv * d + j] = (kv * (g + 2) + g) * d + j;
                v[kv * d + j] = (kv * (g + 2) + g + 1) * d + j;
            }
        return (q, k, v);
    }

    /// <summary>
    /// Partial rotary (rotary dims r of head_dim D): a per-head column order under which the full-width rotate_half pairs
    /// (j, j + D/2) are HF's pairs (j, j + r/2) for j &lt; r/2 and pass-through dims elsewhere (their cos = 1, sin = 0). Applied
    /// alike to q and k it leaves q·k unchanged, so attention sees exactly the partially rotated scores.
    /// </summary>
    public static int[] PartialRotaryColumns(int heads, int headDim, int rotaryDim)
    {
        int d = headDim, r = rotaryDim, half = d / 2, pass = (d - r) / 2;
        var cols = new int[heads * d];
        for (int head = 0; head < heads; head++)
            for (int p = 0; p < d; p++)
                cols[head * d + p] = head * d + (p < r / 2 ? p
                    : p < half ? r + (p - r / 2)
                    : p < half + r / 2 ? r / 2 + (p - half)
                    : r + pass + (p - half - r / 2));
        return cols;
    }

    /// <summary>Fused [gate; up] rows (Phi-3 gate_up_proj): the output columns of each half.</summary>
    public static (int[] Gate, int[] Up) GateUpColumns(ModelConfig c) =>
        (Range(0, c.IntermediateSize), Range(c.IntermediateSize, c.IntermediateSize));

    private static int[] Range(int start, int count) => Enumerable.Range(start, count).ToArray();

    private static bool IsIgnorable(string key, ModelConfig c) =>
        key.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) // old checkpoints save the RoPE buffer
        || (c.TieWordEmbeddings && key == c.Spec.Head);               // a tied head saved anyway is the embedding
}
