// HF rope_scaling (modeling_rope_utils.py): a model-config concern, so it lives with ModelConfig; the kernels only see
// the resulting inv_freq table (Kernels.Rope.InverseFrequencies is the default one, CosSinCpu turns it into cos/sin).
// Everything in fp32 operation by operation as HF does, so the tables match torch's up to the last ulp of pow.
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

/// <summary>
/// HF rope_scaling: Type is "default", "linear", "dynamic", "llama3" or "longrope" (the legacy `type`/`rope_type` key).
/// longrope (Phi-3): per-frequency ShortFactor / LongFactor (the long ones once a sequence outgrows
/// OriginalMaxPositionEmbeddings) and cos/sin × AttentionFactor.
/// </summary>
public sealed record RopeScaling(string Type, double Factor = 1, double LowFreqFactor = 1, double HighFreqFactor = 4,
    int OriginalMaxPositionEmbeddings = 8192, IReadOnlyList<double>? ShortFactor = null, IReadOnlyList<double>? LongFactor = null,
    double AttentionFactor = 1)
{
    public static RopeScaling None { get; } = new("default");

    /// <summary>
    /// inv_freq[D/2] in fp32 as HF computes it. For "dynamic" this is the unscaled table, which HF uses while
    /// max(position_ids)+1 <= max_position_embeddings; beyond that pass <see cref="DynamicNtkTheta"/> as the theta.
    /// </summary>
    public float[] InverseFrequencies(int headDim, double ropeTheta)
    {
        var inv = Rope.InverseFrequencies(headDim, ropeTheta);
        switch (Type)
        {
            case "default":
            case "dynamic":
                return inv;
            case "linear":
                for (int j = 0; j < inv.Length; j++) inv[j] /= (float)Factor;
                return inv;
            case "llama3":
                return Llama3(inv);
            case "longrope":
                return LongRope(headDim, ropeTheta, longSequence: false);
            default:
                throw new NotSupportedException($"rope_scaling type '{Type}' is not supported (default, linear, dynamic, llama3)");
        }
    }

    /// <summary>
    /// Dynamic NTK theta for sequences of <paramref name="seqLen"/> = max(position_ids)+1 positions:
    /// theta * (factor*L/max - (factor-1))^(D/(D-2)) when L > max, else theta unchanged. Computed in double like HF's Python.
    /// </summary>
    public static double DynamicNtkTheta(int headDim, double ropeTheta, double factor, int seqLen, int maxPositionEmbeddings)
    {
        if (seqLen <= maxPositionEmbeddings) return ropeTheta;
        return ropeTheta * Math.Pow(factor * seqLen / maxPositionEmbeddings - (factor - 1), (double)headDim / (headDim - 2));
    }

    /// <summary>
    /// HF _compute_longrope_parameters in fp32: inv_freq[j] = 1 / (ext[j] · theta^(2j/D)), ext = LongFactor for sequences
    /// longer than OriginalMaxPositionEmbeddings (max(position_ids) + 1), else ShortFactor.
    /// </summary>
    public float[] LongRope(int headDim, double ropeTheta, bool longSequence)
    {
        var ext = longSequence ? LongFactor! : ShortFactor!;
        var inv = new float[headDim / 2];
        for (int j = 0; j < inv.Length; j++)
            inv[j] = 1f / ((float)ext[j] * MathF.Pow((float)ropeTheta, (float)(2 * j) / headDim));
        return inv;
    }

    // HF _compute_llama3_parameters in fp32: keep high frequencies, divide low ones by factor, blend the band between.
    private float[] Llama3(float[] inv)
    {
        float factor = (float)Factor, low = (float)LowFreqFactor, band = (float)(HighFreqFactor - LowFreqFactor);
        float lowWavelen = (float)(OriginalMaxPositionEmbeddings / LowFreqFactor);
        float highWavelen = (float)(OriginalMaxPositionEmbeddings / HighFreqFactor);
        var result = new float[inv.Length];
        for (int j = 0; j < inv.Length; j++)
        {
            float wavelen = 1f / inv[j] * (float)(2 * Math.PI);
            float f = wavelen > lowWavelen ? inv[j] / factor : inv[j];
            bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
            if (medium)
            {
                float smooth = (1f / wavelen * OriginalMaxPositionEmbeddings - low) / band;
                f = (1f - smooth) * f / factor + smooth * f;
            }
            result[j] = f;
        }
        return result;
    }
}
