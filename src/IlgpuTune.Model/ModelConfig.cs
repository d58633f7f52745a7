// A decoder-only causal LM's config.json, with the class defaults of transformers' configuration_*.py for missing keys.
// Reads both `torch_dtype` and `dtype`, both legacy `rope_theta` + `rope_scaling` and v5 `rope_parameters`.
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public enum Architecture
{
    Llama,
    Mistral,
    Qwen2,
    InternLM2,
}

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
    public DType? TorchDtype { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    /// <summary>The parsed config.json, kept so exports can write it back with only the keys we changed.</summary>
    public JsonObject? Raw { get; init; }

    public int KvGroups => NumAttentionHeads / NumKeyValueHeads;

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
        var architecture = (modelType, arch) switch
        {
            ("llama", _) or (_, "LlamaForCausalLM") => Architecture.Llama,
            ("mistral", _) or (_, "MistralForCausalLM") => Architecture.Mistral,
            ("qwen2", _) or (_, "Qwen2ForCausalLM") => Architecture.Qwen2,
            ("internlm2", _) or (_, "InternLM2ForCausalLM") => Architecture.InternLM2,
            _ => throw new InvalidDataException(
                $"{source}: model_type '{modelType}' / architectures '{arch}' is not supported (expected llama, mistral, qwen2 or internlm2)"),
        };
        // Class defaults from transformers' configuration_*.py.
        var (vocab, hidden, inter, layers, maxPos) = architecture switch
        {
            Architecture.Llama => (32000, 4096, 11008, 32, 2048),
            Architecture.Mistral => (32000, 4096, 14336, 32, 131072),
            Architecture.Qwen2 => (151936, 4096, 22016, 32, 32768),
            _ => (103168, 4096, 11008, 32, 2048),
        };
        // Sizes are checked before any is used (a zero head count must not become a division by zero); the upper bounds
        // are far above any real model and keep a hostile file from sizing a table by them.
        int Size(string key, int fallback, int max)
        {
            int v = Int(root, key, source) ?? fallback;
            if (v <= 0 || v > max) throw new InvalidDataException($"{source}: key '{key}' is {v}, expected a positive integer up to {max:N0}");
            return v;
        }
        int hiddenSize = Size("hidden_size", hidden, 1 << 20);
        int heads = Size("num_attention_heads", 32, 1 << 16);
        int kvHeads = Size("num_key_value_heads", architecture == Architecture.Mistral ? 8 : heads, 1 << 16);
        int? explicitHeadDim = root["head_dim"] is null ? null : Size("head_dim", 0, 1 << 16);
        if (explicitHeadDim is null && hiddenSize % heads != 0)
            throw new InvalidDataException($"{source}: hidden_size {hiddenSize} is not divisible by num_attention_heads {heads} (and there is no head_dim)");
        int headDim = explicitHeadDim ?? hiddenSize / heads;
        string act = Str(root, "hidden_act", source) ?? "silu";
        if (act != "silu") throw new InvalidDataException($"{source}: hidden_act '{act}' is not supported (expected silu)");
        if (heads % kvHeads != 0)
            throw new InvalidDataException($"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        if (headDim % 2 != 0) throw new InvalidDataException($"{source}: head_dim {headDim} must be even for RoPE");
        if ((long)heads * headDim > 1 << 24)
            throw new InvalidDataException($"{source}: num_attention_heads {heads} × head_dim {headDim} is implausibly large");
        double eps = Num(root, "rms_norm_eps", source) ?? 1e-6;
        if (!(eps > 0 && double.IsFinite(eps))) throw new InvalidDataException($"{source}: key 'rms_norm_eps' is {eps}, expected a small positive number");

        var (theta, scaling) = ReadRope(root, source);
        bool internBias = Bool(root, "bias", source) ?? true;
        bool llamaBias = Bool(root, "attention_bias", source) ?? false;
        return new ModelConfig
        {
            Architecture = architecture,
            ModelType = modelType ?? architecture.ToString().ToLowerInvariant(),
            VocabSize = Size("vocab_size", vocab, 1 << 24),
            HiddenSize = hiddenSize,
            IntermediateSize = Size("intermediate_size", inter, 1 << 22),
            NumHiddenLayers = Size("num_hidden_layers", layers, 4096),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            MaxPositionEmbeddings = Size("max_position_embeddings", maxPos, int.MaxValue),
            RmsNormEps = (float)eps,
            RopeTheta = theta,
            RopeScaling = scaling,
            TieWordEmbeddings = Bool(root, "tie_word_embeddings", source) ?? false,
            AttentionBias = architecture switch
            {
                Architecture.Qwen2 => true,
                Architecture.InternLM2 => internBias,
                Architecture.Llama => llamaBias,
                _ => false,
            },
            OutputBias = architecture switch
            {
                Architecture.InternLM2 => internBias,
                Architecture.Llama => llamaBias,
                _ => false,
            },
            MlpBias = architecture == Architecture.Llama && (Bool(root, "mlp_bias", source) ?? false),
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

    private static (double Theta, RopeScaling Scaling) ReadRope(JsonObject root, string source)
    {
        // transformers v5 writes rope_parameters {rope_type, rope_theta, ...}; older files rope_theta + rope_scaling {type|rope_type, ...}.
        var p = root["rope_parameters"] as JsonObject;
        var s = root["rope_scaling"] as JsonObject;
        double theta = Num(root, "rope_theta", source) ?? (p is null ? null : Num(p, "rope_theta", source)) ?? 10000.0;
        var src = s ?? p;
        string type = src is null ? "default" : (Str(src, "rope_type", source) ?? Str(src, "type", source) ?? "default");
        if (type is not ("default" or "linear" or "dynamic" or "llama3"))
            throw new InvalidDataException($"{source}: rope type '{type}' is not supported (default, linear, dynamic, llama3)");
        if (!(theta > 0 && double.IsFinite(theta))) throw new InvalidDataException($"{source}: rope_theta {theta} must be a positive number");
        if (type == "default" || src is null) return (theta, RopeScaling.None);
        double factor = Num(src, "factor", source) ?? 1.0;
        if (!(factor > 0 && double.IsFinite(factor))) throw new InvalidDataException($"{source}: rope scaling factor {factor} must be a positive number");
        return (theta, new RopeScaling(
            type,
            factor,
            Num(src, "low_freq_factor", source) ?? 1.0,
            Num(src, "high_freq_factor", source) ?? 4.0,
            Int(src, "original_max_position_embeddings", source) ?? 8192));
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

    private static int? Int(JsonObject o, string key, string source) => Get(o, key, source, v => v.GetValue<int>());
    private static double? Num(JsonObject o, string key, string source) => Get(o, key, source, v => v.GetValue<double>());
    private static bool? Bool(JsonObject o, string key, string source) => Get(o, key, source, v => v.GetValue<bool>());

    private static string? Str(JsonObject o, string key, string source)
    {
        var node = o[key];
        if (node is null) return null;
        return node is JsonValue v && v.TryGetValue<string>(out var s)
            ? s
            : throw new InvalidDataException($"{source}: key '{key}' has value {node.ToJsonString()}, expected a string");
    }
}
