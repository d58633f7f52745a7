// The supported families, one ArchitectureSpec each, from transformers' configuration_*.py / modeling_*.py (InternLM v1
// and InternLM2 from their published remote code). Adding a dense family = one entry here + its tests + its golden case.
using System.Text.Json.Nodes;

namespace IlgpuTune.Model;

internal static class Families
{
    public static IReadOnlyList<ArchitectureSpec> All { get; } =
    [
        new()
        {
            // LlamaAttention: q/k/v/o all take attention_bias; LlamaMLP: mlp_bias.
            Architecture = Architecture.Llama, ModelType = "llama", ClassName = "LlamaForCausalLM", PromptTemplate = "llama2_chat",
            DefaultVocabSize = 32000, DefaultIntermediateSize = 11008, DefaultMaxPositions = 2048,
            ReadOptions = r => new()
            {
                QkvBias = r.Bool("attention_bias") ?? false,
                OutputBias = r.Bool("attention_bias") ?? false,
                MlpBias = r.Bool("mlp_bias") ?? false,
            },
        },
        new()
        {
            // MistralAttention: every layer attends within sliding_window (4096 by default; null in v0.2+ configs).
            Architecture = Architecture.Mistral, ModelType = "mistral", ClassName = "MistralForCausalLM", PromptTemplate = "mistral",
            DefaultVocabSize = 32000, DefaultIntermediateSize = 14336, DefaultMaxPositions = 131072, DefaultKvHeads = 8,
            ReadOptions = r => new() { SlidingWindows = AllLayers(r, r.Has("sliding_window") ? r.Window("sliding_window") : 4096) },
        },
        new()
        {
            // Qwen2Attention: bias on q/k/v, none on o; sliding layers only when use_sliding_window.
            Architecture = Architecture.Qwen2, ModelType = "qwen2", ClassName = "Qwen2ForCausalLM", PromptTemplate = "qwen_chat",
            DefaultVocabSize = 151936, DefaultIntermediateSize = 22016, DefaultMaxPositions = 32768,
            ReadOptions = r => new() { QkvBias = true, SlidingWindows = QwenWindows(r) },
        },
        new()
        {
            // InternLM2 remote code: fused wqkv grouped per KV head; `bias` covers wqkv and wo, the MLP has none.
            Architecture = Architecture.InternLM2, ModelType = "internlm2", ClassName = "InternLM2ForCausalLM", PromptTemplate = "internlm2_chat",
            DefaultVocabSize = 103168, DefaultIntermediateSize = 11008, DefaultMaxPositions = 2048,
            Embed = "model.tok_embeddings.weight", Head = "output.weight",
            InputNorm = "attention_norm", PostAttentionNorm = "ffn_norm",
            QkvLayout = QkvLayout.GroupedPerKvHead, Qkv = "attention.wqkv", O = "attention.wo",
            Gate = "feed_forward.w1", Up = "feed_forward.w3", Down = "feed_forward.w2",
            ReadOptions = r => new() { QkvBias = r.Bool("bias") ?? true, OutputBias = r.Bool("bias") ?? true },
        },
        new()
        {
            // Qwen3Attention: q_norm/k_norm (RMSNorm over head_dim) before RoPE; attention_bias on q/k/v/o; explicit head_dim.
            Architecture = Architecture.Qwen3, ModelType = "qwen3", ClassName = "Qwen3ForCausalLM", PromptTemplate = "qwen_chat",
            DefaultVocabSize = 151936, DefaultIntermediateSize = 22016, DefaultMaxPositions = 32768, DefaultHeadDim = 128,
            QNorm = "self_attn.q_norm", KNorm = "self_attn.k_norm",
            ReadOptions = r => new()
            {
                QkvBias = r.Bool("attention_bias") ?? false,
                OutputBias = r.Bool("attention_bias") ?? false,
                SlidingWindows = QwenWindows(r),
            },
        },
        new()
        {
            // InternLM v1 remote code: Llama's names and layout with `bias` on q/k/v/o (MLP none), MHA (no
            // num_key_value_heads key), RoPE from `rotary: {base, type: origin|dynamic, scaling_factor}` (read by ModelConfig).
            Architecture = Architecture.InternLM, ModelType = "internlm", ClassName = "InternLMForCausalLM", PromptTemplate = "internlm_chat",
            DefaultVocabSize = 103168, DefaultIntermediateSize = 11008, DefaultMaxPositions = 2048,
            ReadOptions = r => new() { QkvBias = r.Bool("bias") ?? true, OutputBias = r.Bool("bias") ?? true },
        },
        new()
        {
            // Phi3Attention: fused qkv_proj rows [q; k; v], partial_rotary_factor, every layer within sliding_window when
            // set; Phi3MLP: gate_up_proj rows [gate; up]. No biases.
            Architecture = Architecture.Phi3, ModelType = "phi3", ClassName = "Phi3ForCausalLM", PromptTemplate = "phi3_chat",
            DefaultVocabSize = 32064, DefaultHiddenSize = 3072, DefaultIntermediateSize = 8192, DefaultMaxPositions = 4096,
            DefaultRmsNormEps = 1e-5,
            QkvLayout = QkvLayout.Concatenated, Qkv = "self_attn.qkv_proj", GateUp = "mlp.gate_up_proj",
            ReadOptions = r => new()
            {
                SlidingWindows = AllLayers(r, r.Window("sliding_window")),
                // v5 also keeps it in rope_parameters.
                PartialRotaryFactor = r.Num("partial_rotary_factor")
                    ?? (r.Root["rope_parameters"] is JsonObject rp ? ModelConfig.Num(rp, "partial_rotary_factor", r.Source) : null) ?? 1.0,
            },
        },
        new()
        {
            // Gemma3 text decoder: (1 + w) RMSNorms in fp32, embeddings × √hidden, GeGLU with gelu-tanh, q/k norms,
            // softmax scale query_pre_attn_scalar^-0.5, the attention and MLP outputs normed before their residual adds,
            // sliding layers (5 of 6 by default) with their own RoPE base, tied embeddings.
            Architecture = Architecture.Gemma3Text, ModelType = "gemma3_text", ClassName = "Gemma3ForCausalLM", PromptTemplate = "gemma",
            DefaultVocabSize = 262208, DefaultHiddenSize = 2304, DefaultIntermediateSize = 9216, DefaultLayers = 26,
            DefaultHeads = 8, DefaultKvHeads = 4, DefaultHeadDim = 256, DefaultMaxPositions = 131072,
            DefaultRopeTheta = 1_000_000.0, DefaultTieWordEmbeddings = true,
            ActivationKey = "hidden_activation", DefaultActivation = "gelu_pytorch_tanh",
            PreFeedforwardNorm = "pre_feedforward_layernorm", PostFeedforwardNorm = "post_feedforward_layernorm",
            QNorm = "self_attn.q_norm", KNorm = "self_attn.k_norm",
            NormStyle = NormStyle.OnePlusWeight, ScaleEmbeddings = true,
            ReadOptions = r =>
            {
                int pattern = r.Int("sliding_window_pattern") ?? 6;
                return new()
                {
                    QkvBias = r.Bool("attention_bias") ?? false,
                    OutputBias = r.Bool("attention_bias") ?? false,
                    SlidingWindows = r.Windows(r.Window("sliding_window") ?? 4096, i => (i + 1) % pattern != 0),
                    // v5 moves it to rope_parameters.sliding_attention.rope_theta.
                    LocalRopeTheta = r.Num("rope_local_base_freq")
                        ?? (r.Root["rope_parameters"]?["sliding_attention"] is JsonObject local
                            ? ModelConfig.Num(local, "rope_theta", r.Source) : null) ?? 10000.0,
                    QueryPreAttnScalar = r.Num("query_pre_attn_scalar") ?? 256,
                };
            },
        },
        new()
        {
            // MixtralSparseMoeBlock on every layer: block_sparse_moe.gate router, experts.N.w1 (gate) / w3 (up) / w2 (down),
            // top-k weights always renormalised; Mistral's attention (sliding_window, null by default).
            Architecture = Architecture.Mixtral, ModelType = "mixtral", ClassName = "MixtralForCausalLM", PromptTemplate = "mixtral",
            DefaultVocabSize = 32000, DefaultIntermediateSize = 14336, DefaultMaxPositions = 131072, DefaultKvHeads = 8,
            DefaultRmsNormEps = 1e-5, DefaultRopeTheta = 1e6,
            Router = "block_sparse_moe.gate", Experts = "block_sparse_moe.experts", ExpertGate = "w1", ExpertUp = "w3", ExpertDown = "w2",
            ReadOptions = r => new()
            {
                SlidingWindows = AllLayers(r, r.Window("sliding_window")),
                Moe = ReadMoe(r, "num_local_experts", 8, 2, normTopK: true, r.Int("intermediate_size") ?? 14336, _ => true),
            },
        },
        new()
        {
            // Qwen3MoeSparseMoeBlock where (i + 1) % decoder_sparse_step == 0 and i not in mlp_only_layers (else Qwen3's dense
            // MLP): mlp.gate router, mlp.experts.N.gate_proj/up_proj/down_proj of moe_intermediate_size; norm_topk_prob.
            Architecture = Architecture.Qwen3Moe, ModelType = "qwen3_moe", ClassName = "Qwen3MoeForCausalLM", PromptTemplate = "qwen_chat",
            DefaultVocabSize = 151936, DefaultHiddenSize = 2048, DefaultIntermediateSize = 6144, DefaultLayers = 24, DefaultKvHeads = 4,
            DefaultMaxPositions = 32768,
            QNorm = "self_attn.q_norm", KNorm = "self_attn.k_norm",
            Router = "mlp.gate", Experts = "mlp.experts",
            ReadOptions = r =>
            {
                int step = r.Int("decoder_sparse_step") ?? 1;
                if (step < 1) throw new InvalidDataException($"{r.Source}: key 'decoder_sparse_step' is {step}, expected a positive integer");
                var denseOnly = r.Root["mlp_only_layers"] is JsonArray a
                    ? a.Select((n, i) => (n as JsonValue)?.TryGetValue<int>(out int l) == true ? l
                        : throw new InvalidDataException($"{r.Source}: key 'mlp_only_layers' item {i} is not a layer index")).ToHashSet()
                    : [];
                return new()
                {
                    QkvBias = r.Bool("attention_bias") ?? false,
                    OutputBias = r.Bool("attention_bias") ?? false,
                    SlidingWindows = QwenWindows(r),
                    // transformers v5 saves num_experts as num_local_experts.
                    Moe = ReadMoe(r, r.Has("num_experts") ? "num_experts" : "num_local_experts", 128, 8, r.Bool("norm_topk_prob") ?? false, r.Int("moe_intermediate_size") ?? 768,
                        i => !denseOnly.Contains(i) && (i + 1) % step == 0),
                };
            },
        },
    ];

    // Mixtral / Qwen3-MoE sparse MLP keys; experts, top-k and the expert width checked like every size.
    private static MoeOptions ReadMoe(ConfigReader r, string expertsKey, int defaultExperts, int defaultTopK, bool normTopK,
        int expertWidth, Func<int, bool> sparse)
    {
        int experts = r.Int(expertsKey) ?? defaultExperts, topK = r.Int("num_experts_per_tok") ?? defaultTopK;
        if (experts < 1 || experts > 1 << 14) throw new InvalidDataException($"{r.Source}: key '{expertsKey}' is {experts}, expected 1..16384");
        if (topK < 1 || topK > experts)
            throw new InvalidDataException($"{r.Source}: key 'num_experts_per_tok' is {topK}, expected 1..{expertsKey} ({experts})");
        if (expertWidth < 1 || expertWidth > 1 << 22) throw new InvalidDataException($"{r.Source}: the experts' intermediate size {expertWidth} is out of range");
        return new MoeOptions(experts, topK, normTopK, expertWidth, Enumerable.Range(0, r.Layers).Select(sparse).ToArray(),
            r.Bool("output_router_logits") ?? false, r.Num("router_aux_loss_coef") ?? 0.001);
    }

    private static int[] AllLayers(ConfigReader r, int? window) => Enumerable.Repeat(window ?? 0, r.Layers).ToArray();

    // Qwen2/Qwen3: layer_types, else sliding from max_window_layers on when use_sliding_window.
    private static IReadOnlyList<int> QwenWindows(ConfigReader r)
    {
        bool use = r.Bool("use_sliding_window") ?? false;
        int window = r.Window("sliding_window") ?? 4096, from = r.Int("max_window_layers") ?? 28;
        return r.Windows(window, i => use && i >= from);
    }
}
