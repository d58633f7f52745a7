// One declaration per HF model_type: the checkpoint key names (transformers' modeling_*.py module paths), how fused
// projections split, the class defaults of configuration_*.py, and the structural choices (q/k norm, norm style, extra
// norms, embedding scale). Everything a config.json can switch on or off (biases, windows, rope bases, MoE sizes) is read
// by the spec's ReadOptions into ModelConfig; the weight schema, the loader and the decoder only read these two.
using System.Text.Json.Nodes;

namespace IlgpuTune.Model;

public enum Architecture
{
    Llama,
    Mistral,
    Qwen2,
    InternLM2,
    Qwen3,
    InternLM,
    Phi3,
    Gemma3Text,
    Mixtral,
    Qwen3Moe,
}

/// <summary>How q, k and v come out of the attention input.</summary>
public enum QkvLayout
{
    /// <summary>q_proj, k_proj, v_proj.</summary>
    Separate,
    /// <summary>One projection whose rows are [q (heads·D); k (kvHeads·D); v (kvHeads·D)] (Phi-3 qkv_proj).</summary>
    Concatenated,
    /// <summary>One projection whose rows are grouped per KV head: [G queries, k, v] × kvHeads (InternLM2 wqkv).</summary>
    GroupedPerKvHead,
}

/// <summary>RMSNorm's scale: w (Llama) or (1 + w) with weights stored around 0 (Gemma).</summary>
public enum NormStyle
{
    Weight,
    OnePlusWeight,
}

/// <summary>Config keys a family reads beyond the shared ones (biases, windows, rope bases): filled by the spec's ReadOptions.</summary>
public sealed record FamilyOptions
{
    public bool QkvBias { get; init; }
    public bool OutputBias { get; init; }
    public bool MlpBias { get; init; }
    /// <summary>Sliding-window size per layer (0 = full attention); empty = every layer full.</summary>
    public IReadOnlyList<int> SlidingWindows { get; init; } = [];
    /// <summary>RoPE base of the sliding layers when it differs from rope_theta (Gemma 3 rope_local_base_freq).</summary>
    public double? LocalRopeTheta { get; init; }
    /// <summary>partial_rotary_factor (Phi-3): RoPE on the first factor·head_dim dims of each head.</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;
    /// <summary>Softmax scale = query_pre_attn_scalar^-0.5 instead of head_dim^-0.5 (Gemma).</summary>
    public double? QueryPreAttnScalar { get; init; }
    /// <summary>Sparse MLP (Mixtral num_local_experts, Qwen3-MoE num_experts); null for a dense model.</summary>
    public MoeOptions? Moe { get; init; }
}

/// <summary>A sparse MLP's config: experts, top-k, renormalisation, expert width, which layers are sparse, the aux loss.</summary>
public sealed record MoeOptions(int NumExperts, int NumExpertsPerTok, bool NormTopKProb, int ExpertIntermediateSize,
    IReadOnlyList<bool> SparseLayers, bool OutputRouterLogits, double RouterAuxLossCoef);

public sealed record ArchitectureSpec
{
    public required Architecture Architecture { get; init; }
    public required string ModelType { get; init; }
    /// <summary>`architectures[0]` of config.json.</summary>
    public required string ClassName { get; init; }

    // Class defaults of configuration_*.py for keys a config.json may omit.
    public required int DefaultVocabSize { get; init; }
    public int DefaultHiddenSize { get; init; } = 4096;
    public required int DefaultIntermediateSize { get; init; }
    public int DefaultLayers { get; init; } = 32;
    public int DefaultHeads { get; init; } = 32;
    /// <summary>num_key_value_heads when absent; null = num_attention_heads (MHA).</summary>
    public int? DefaultKvHeads { get; init; }
    public int? DefaultHeadDim { get; init; }
    public required int DefaultMaxPositions { get; init; }
    public double DefaultRmsNormEps { get; init; } = 1e-6;
    public double DefaultRopeTheta { get; init; } = 10000.0;
    public bool DefaultTieWordEmbeddings { get; init; }
    /// <summary>The config key naming the activation (Gemma: hidden_activation) and its default.</summary>
    public string ActivationKey { get; init; } = "hidden_act";
    public string DefaultActivation { get; init; } = "silu";

    // Key names; per-layer names are relative to "model.layers.{i}.".
    public string Embed { get; init; } = "model.embed_tokens.weight";
    public string FinalNorm { get; init; } = "model.norm.weight";
    public string Head { get; init; } = "lm_head.weight";
    public string InputNorm { get; init; } = "input_layernorm";
    public string PostAttentionNorm { get; init; } = "post_attention_layernorm";
    /// <summary>Gemma: the norm after attention is applied to its output; the MLP gets its own pre/post norms.</summary>
    public string? PreFeedforwardNorm { get; init; }
    public string? PostFeedforwardNorm { get; init; }
    public QkvLayout QkvLayout { get; init; } = QkvLayout.Separate;
    /// <summary>Separate: the prefix of q/k/v_proj; fused: the fused projection's name.</summary>
    public string Q { get; init; } = "self_attn.q_proj";
    public string K { get; init; } = "self_attn.k_proj";
    public string V { get; init; } = "self_attn.v_proj";
    public string? Qkv { get; init; }
    public string O { get; init; } = "self_attn.o_proj";
    /// <summary>Per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3).</summary>
    public string? QNorm { get; init; }
    public string? KNorm { get; init; }
    public string Gate { get; init; } = "mlp.gate_proj";
    public string Up { get; init; } = "mlp.up_proj";
    public string Down { get; init; } = "mlp.down_proj";
    /// <summary>Fused [gate; up] rows (Phi-3 gate_up_proj); null when separate.</summary>
    public string? GateUp { get; init; }
    /// <summary>Sparse layers: the router linear and the experts' prefix ("{Experts}.{e}.") with their gate/up/down names.</summary>
    public string? Router { get; init; }
    public string? Experts { get; init; }
    public string ExpertGate { get; init; } = "gate_proj";
    public string ExpertUp { get; init; } = "up_proj";
    public string ExpertDown { get; init; } = "down_proj";

    public NormStyle NormStyle { get; init; } = NormStyle.Weight;
    /// <summary>Embeddings × √hidden_size, the scale rounded to the weights' dtype (Gemma).</summary>
    public bool ScaleEmbeddings { get; init; }

    /// <summary>The XTuner prompt template of the family's chat models (`--prompt-template auto` without chat tokens to go by).</summary>
    public required string PromptTemplate { get; init; }

    /// <summary>Reads the family's own config keys.</summary>
    public required Func<ConfigReader, FamilyOptions> ReadOptions { get; init; }

    public string Layer(int i, string module) => $"model.layers.{i}.{module}";

    public static IReadOnlyList<ArchitectureSpec> All { get; } = Families.All;

    public static ArchitectureSpec For(Architecture a) => All.First(s => s.Architecture == a);

    /// <summary>The spec for config.json's model_type, else its architectures[0] class name; null when neither is known.</summary>
    public static ArchitectureSpec? Find(string? modelType, string? className) =>
        All.FirstOrDefault(s => s.ModelType == modelType) ?? All.FirstOrDefault(s => s.ClassName == className);
}

/// <summary>Typed, key-naming reads of a config.json object (for a spec's ReadOptions).</summary>
public sealed class ConfigReader(JsonObject root, string source, int layers)
{
    public JsonObject Root => root;
    public string Source => source;
    public int Layers => layers;
    public int? Int(string key) => ModelConfig.Int(root, key, source);
    public double? Num(string key) => ModelConfig.Num(root, key, source);
    public bool? Bool(string key) => ModelConfig.Bool(root, key, source);
    public string? Str(string key) => ModelConfig.Str(root, key, source);
    public bool Has(string key) => root[key] is not null;

    /// <summary>
    /// Windows per layer from `layer_types` ("sliding_attention" / "full_attention"), else from <paramref name="fallback"/>
    /// (the family's rule for configs written before layer_types); <paramref name="window"/> is the sliding layers' size.
    /// </summary>
    public IReadOnlyList<int> Windows(int window, Func<int, bool> fallback)
    {
        if (root["layer_types"] is not JsonArray types) return Enumerable.Range(0, layers).Select(i => fallback(i) ? window : 0).ToArray();
        if (types.Count != layers)
            throw new InvalidDataException($"{source}: key 'layer_types' has {types.Count} entries, expected num_hidden_layers = {layers}");
        return types.Select((t, i) => (t as JsonValue)?.TryGetValue<string>(out var s) == true ? s switch
        {
            "sliding_attention" => window,
            "full_attention" => 0,
            _ => throw new InvalidDataException($"{source}: key 'layer_types' item {i} is '{s}', expected sliding_attention or full_attention"),
        } : throw new InvalidDataException($"{source}: key 'layer_types' item {i} is not a string")).ToArray();
    }

    /// <summary>A positive window size, or null when the key is absent or null.</summary>
    public int? Window(string key)
    {
        int? w = Int(key);
        if (w is <= 0) throw new InvalidDataException($"{source}: key '{key}' is {w}, expected a positive number of tokens or null");
        return w;
    }
}
