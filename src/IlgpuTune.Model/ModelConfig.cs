// A decoder-only causal LM's config.json, with the class defaults of transformers' configuration_*.py for missing keys.
// Reads both `torch_dtype` and `dtype`, both legacy `rope_theta` + `rope_scaling` and v5 `rope_parameters`.
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed class ModelConfig
{
    public required Architecture Architecture { get; init; }
    public required string ModelType { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public required float RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public required RopeScaling RopeScaling { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry a bias (Qwen2 always; Llama `attention_bias`; InternLM2 `bias`, which also covers wo).</summary>
    public required bool AttentionBias { get; init; }
    /// <summary>The output projection carries a bias (Llama `attention_bias`, InternLM2 `bias`; never Qwen2).</summary>
    public required bool OutputBias { get; init; }
    public required bool MlpBias { get; init; }
    /// <summary>hidden_act (hidden_activation for Gemma): silu (SwiGLU) or gelu_pytorch_tanh (GeGLU).</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Sliding-window size per layer (0 = full attention); empty = every layer full.</summary>
    public IReadOnlyList<int> SlidingWindows { get; init; } = [];
    /// <summary>RoPE base of the sliding layers when it differs from RopeTheta (Gemma 3), with default scaling.</summary>
    public double? LocalRopeTheta { get; init; }
    /// <summary>RoPE acts on the first RotaryDim dims of each head (partial_rotary_factor · head_dim); the rest pass through.</summary>
    public int? PartialRotaryDim { get; init; }
    /// <summary>The softmax scale's query_pre_attn_scalar (scale = its ^-0.5); null = head_dim.</summary>
    public double? QueryPreAttnScalar { get; init; }
    /// <summary>The sparse MLP (Mixtral, Qwen3-MoE); null for a dense model.</summary>
    public MoeOptions? Moe { get; init; }
    public DType? TorchDtype { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    /// <summary>The parsed config.json, kept so exports can write it back with only the keys we changed.</summary>
    public JsonObject? Raw { get; init; }

    public int KvGroups => NumAttentionHeads / NumKeyValueHeads;
    public ArchitectureSpec Spec => ArchitectureSpec.For(Architecture);
    public int RotaryDim => PartialRotaryDim ?? HeadDim;
    public int SlidingWindow(int layer) => SlidingWindows.Count == 0 ? 0 : SlidingWindows[layer];
    public bool IsSparseLayer(int layer) => Moe is { } m && m.SparseLayers[layer];

    public static ModelConfig Load(string path)
    {
        if (!Directory.Exists(path) && !File.Exists(path)) throw new DirectoryNotFoundException($"model folder {path} does not exist");
        string file = Directory.Exists(path) ? System.IO.Path.Combine(path, "config.json") : path;
        if (!File.Exists(file)) throw new FileNotFoundException($"no config.json at {file}", file);
        return FromJson(StrictJson.ParseObject(File.ReadAllBytes(file), file), file);
    }

    public static ModelConfig FromJson(JsonObject root, string source)
    {
        string? modelType = Str(root, "model_type", source);
        string? arch = root["architectures"] switch
        {
            null => null,
            JsonArray { Count: 0 } => null,
            JsonArray a when a[0] is JsonValue v && v.TryGetValue<string>(out var s) => s,
            var other => throw new InvalidDataException($"{source}: key 'architectures' has value {Short(other)}, expected a list of class names"),
        };
        var spec = ArchitectureSpec.Find(modelType, arch) ?? throw new InvalidDataException(
            $"{source}: model_type '{modelType}' / architectures '{arch}' is not supported (expected " +
            string.Join(", ", ArchitectureSpec.All.Select(f => f.ModelType)) + ")");
        // Sizes are checked before any is used (a zero head count must not become a division by zero); the upper bounds
        // are far above any real model and keep a hostile file from sizing a table by them.
        int Size(string key, int fallback, int max)
        {
            int v = Int(root, key, source) ?? fallback;
            if (v <= 0 || v > max) throw new InvalidDataException($"{source}: key '{key}' is {v}, expected a positive integer up to {max:N0}");
            return v;
        }
        int hiddenSize = Size("hidden_size", spec.DefaultHiddenSize, 1 << 20);
        int heads = Size("num_attention_heads", spec.DefaultHeads, 1 << 16);
        int kvHeads = Size("num_key_value_heads", spec.DefaultKvHeads ?? heads, 1 << 16);
        int? explicitHeadDim = root["head_dim"] is null ? spec.DefaultHeadDim : Size("head_dim", 0, 1 << 16);
        int layers = Size("num_hidden_layers", spec.DefaultLayers, 4096);
        if (explicitHeadDim is null && hiddenSize % heads != 0)
            throw new InvalidDataException($"{source}: hidden_size {hiddenSize} is not divisible by num_attention_heads {heads} (and there is no head_dim)");
        int headDim = explicitHeadDim ?? hiddenSize / heads;
        string act = Str(root, spec.ActivationKey, source) ?? spec.DefaultActivation;
        if (act is not ("silu" or "gelu_pytorch_tanh"))
            throw new InvalidDataException($"{source}: {spec.ActivationKey} '{act}' is not supported (expected silu or gelu_pytorch_tanh)");
        if (heads % kvHeads != 0)
            throw new InvalidDataException($"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        if (headDim % 2 != 0) throw new InvalidDataException($"{source}: head_dim {headDim} must be even for RoPE");
        if ((long)heads * headDim > 1 << 24)
            throw new InvalidDataException($"{source}: num_attention_heads {heads} × head_dim {headDim} is implausibly large");
        double eps = Num(root, "rms_norm_eps", source) ?? spec.DefaultRmsNormEps;
        if (!(eps > 0 && double.IsFinite(eps))) throw new InvalidDataException($"{source}: key 'rms_norm_eps' is {eps}, expected a small positive number");

        var (theta, scaling) = ReadRope(root, source, spec);
        var options = spec.ReadOptions(new ConfigReader(root, source, layers));
        int? rotaryDim = null;
        if (options.PartialRotaryFactor != 1.0)
        {
            double f = options.PartialRotaryFactor;
            int dim = (int)(headDim * f);
            if (!(f > 0 && f < 1) || dim % 2 != 0)
                throw new InvalidDataException($"{source}: key 'partial_rotary_factor' is {f}, expected a factor in (0, 1] giving an even number of dims of head_dim {headDim}");
            rotaryDim = dim;
        }
        if (scaling.Type == "longrope")
            foreach (var (key, list) in new[] { ("short_factor", scaling.ShortFactor!), ("long_factor", scaling.LongFactor!) })
                if (list.Count != (rotaryDim ?? headDim) / 2)
                    throw new InvalidDataException($"{source}: rope '{key}' has {list.Count} entries, expected rotary dims / 2 = {(rotaryDim ?? headDim) / 2}");
        return new ModelConfig
        {
            Architecture = spec.Architecture,
            ModelType = modelType ?? spec.ModelType,
            VocabSize = Size("vocab_size", spec.DefaultVocabSize, 1 << 24),
            HiddenSize = hiddenSize,
            IntermediateSize = Size("intermediate_size", spec.DefaultIntermediateSize, 1 << 22),
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            MaxPositionEmbeddings = Size("max_position_embeddings", spec.DefaultMaxPositions, int.MaxValue),
            RmsNormEps = (float)eps,
            RopeTheta = theta,
            RopeScaling = scaling,
            TieWordEmbeddings = Bool(root, "tie_word_embeddings", source) ?? spec.DefaultTieWordEmbeddings,
            AttentionBias = options.QkvBias,
            OutputBias = options.OutputBias,
            MlpBias = options.MlpBias,
            HiddenAct = act,
            SlidingWindows = options.SlidingWindows,
            LocalRopeTheta = options.LocalRopeTheta,
            PartialRotaryDim = rotaryDim,
            QueryPreAttnScalar = options.QueryPreAttnScalar,
            Moe = options.Moe,
            TorchDtype = DTypeInfo.FromTorchName(Str(root, "dtype", source) ?? Str(root, "torch_dtype", source)),
            BosTokenId = Int(root, "bos_token_id", source),
            EosTokenIds = root["eos_token_id"] switch
            {
                JsonArray arr => arr.Select((n, i) => n is JsonValue v && v.TryGetValue<int>(out int id) ? id
                    : throw new InvalidDataException($"{source}: key 'eos_token_id' item {i} is {Short(n)}, expected a token id")).ToArray(),
                JsonValue v => [v.TryGetValue<int>(out int id) ? id : throw new InvalidDataException($"{source}: key 'eos_token_id' is {Short(v)}, expected a token id or a list of them")],
                null => [],
                var other => throw new InvalidDataException($"{source}: key 'eos_token_id' is {Short(other)}, expected a token id or a list of them"),
            },
            PadTokenId = Int(root, "pad_token_id", source),
            Raw = root,
        };
    }

    private static (double Theta, RopeScaling Scaling) ReadRope(JsonObject root, string source, ArchitectureSpec spec)
    {
        // InternLM v1 remote code: rotary {base, type: "origin" | "dynamic", scaling_factor}.
        if (spec.Architecture == Architecture.InternLM && root["rotary"] is JsonObject rotary)
        {
            double b = Num(rotary, "base", source) ?? 10000.0;
            if (!(b > 0 && double.IsFinite(b))) throw new InvalidDataException($"{source}: key 'rotary.base' is {b}, expected a positive number");
            return Str(rotary, "type", source) switch
            {
                null or "origin" => (b, RopeScaling.None),
                "dynamic" => (b, new RopeScaling("dynamic", Num(rotary, "scaling_factor", source) ?? 1.0)),
                var t => throw new InvalidDataException($"{source}: key 'rotary.type' is '{t}', expected origin or dynamic"),
            };
        }
        // transformers v5 writes rope_parameters {rope_type, rope_theta, ...}; older files rope_theta + rope_scaling {type|rope_type, ...}.
        var p = root["rope_parameters"] as JsonObject;
        var s = root["rope_scaling"] as JsonObject;
        // Gemma 3 under v5 keeps one rope_parameters per layer type; the global (full-attention) one is the model's.
        if (p?["full_attention"] is JsonObject full) p = full;
        double theta = Num(root, "rope_theta", source) ?? (p is null ? null : Num(p, "rope_theta", source)) ?? spec.DefaultRopeTheta;
        var src = s ?? p;
        string type = src is null ? "default" : (Str(src, "rope_type", source) ?? Str(src, "type", source) ?? "default");
        if (type == "su") type = "longrope"; // early Phi-3 configs; transformers reads them as longrope
        if (type is not ("default" or "linear" or "dynamic" or "llama3" or "longrope"))
            throw new InvalidDataException($"{source}: rope type '{type}' is not supported (default, linear, dynamic, llama3, longrope)");
        if (!(theta > 0 && double.IsFinite(theta))) throw new InvalidDataException($"{source}: rope_theta {theta} must be a positive number");
        if (type == "default" || src is null) return (theta, RopeScaling.None);
        if (type == "longrope") return (theta, LongRope(root, src, source));
        double factor = Num(src, "factor", source) ?? 1.0;
        if (!(factor > 0 && double.IsFinite(factor))) throw new InvalidDataException($"{source}: rope scaling factor {factor} must be a positive number");
        return (theta, new RopeScaling(
            type,
            factor,
            Num(src, "low_freq_factor", source) ?? 1.0,
            Num(src, "high_freq_factor", source) ?? 4.0,
            Int(src, "original_max_position_embeddings", source) ?? 8192));
    }

    // HF _compute_longrope_parameters: with a top-level original_max_position_embeddings (Phi-3) the factor is
    // max_position_embeddings / it; attention_factor defaults to sqrt(1 + ln(factor) / ln(original)) (1 when factor <= 1).
    private static RopeScaling LongRope(JsonObject root, JsonObject src, string source)
    {
        IReadOnlyList<double> Factors(string key) => src[key] is JsonArray a
            ? a.Select((n, i) => n is JsonValue v && v.TryGetValue<double>(out double f) && f > 0 && double.IsFinite(f) ? f
                : throw new InvalidDataException($"{source}: key '{key}' item {i} is {Short(n)}, expected a positive number")).ToArray()
            : throw new InvalidDataException($"{source}: rope type longrope needs a list '{key}'");
        int maxPos = Int(root, "max_position_embeddings", source) ?? 4096;
        int? topOriginal = Int(root, "original_max_position_embeddings", source);
        int original = topOriginal ?? Int(src, "original_max_position_embeddings", source) ?? maxPos;
        if (original <= 0) throw new InvalidDataException($"{source}: original_max_position_embeddings {original} must be positive");
        double factor = topOriginal is not null ? (double)maxPos / original : Num(src, "factor", source) ?? 1.0;
        double attention = Num(src, "attention_factor", source)
            ?? (factor <= 1 ? 1.0 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(original)));
        return new RopeScaling("longrope", factor, OriginalMaxPositionEmbeddings: original, ShortFactor: Factors("short_factor"),
            LongFactor: Factors("long_factor"), AttentionFactor: attention);
    }

    private static T? Get<T>(JsonObject o, string key, string source, Func<JsonValue, T> read) where T : struct
    {
        var node = o[key];
        if (node is null) return null;
        try
        {
            return read(node.AsValue());
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: key '{key}' has value {node.ToJsonString()}, expected {typeof(T).Name.ToLowerInvariant()}");
        }
    }

    private static string Short(JsonNode? n)
    {
        string s = n?.ToJsonString() ?? "null";
        return s.Length <= 60 ? s : s[..40] + "…";
    }

    internal static int? Int(JsonObject o, string key, string source) => Get(o, key, source, v => v.GetValue<int>());
    internal static double? Num(JsonObject o, string key, string source) => Get(o, key, source, v => v.GetValue<double>());
    internal static bool? Bool(JsonObject o, string key, string source) => Get(o, key, source, v => v.GetValue<bool>());

    internal static string? Str(JsonObject o, string key, string source)
    {
        var node = o[key];
        if (node is null) return null;
        return node is JsonValue v && v.TryGetValue<string>(out var s)
            ? s
            : throw new InvalidDataException($"{source}: key '{key}' has value {node.ToJsonString()}, expected a string");
    }
}
