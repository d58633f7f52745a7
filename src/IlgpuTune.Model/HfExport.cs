// Full-model export as a transformers folder: config.json + model*.safetensors (HF names, sharded with an index), written
// atomically. Weights are copied to the host one tensor at a time, so host memory holds one tensor, not the model.
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public static class HfExport
{
    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="outDir"/> (temp folder, then rename; an existing folder is replaced):
    /// config.json — the loaded config.json with "torch_dtype"/"dtype" set to <paramref name="dtype"/> (or, for a config built in
    /// code, one generated from its fields) — and the weights in <paramref name="dtype"/> under their checkpoint names, a tied
    /// head omitted (it is the embedding). A linear carrying LoRA is written merged (W + scaling · B @ A), so the folder computes
    /// what the model computes. <paramref name="sourceDirectory"/>: copy the generation config, tokenizer files and remote-code
    /// *.py from there. Returns the weight files written.
    /// </summary>
    public static IReadOnlyList<string> Save(CausalLM model, string outDir, DType dtype, long maxShardBytes, string? sourceDirectory = null)
    {
        HfFiles.CheckOutputDtype(dtype);
        if (sourceDirectory is not null && HfFiles.IsSameOrInside(sourceDirectory, outDir))
            throw new ArgumentException($"output folder {Path.GetFullPath(outDir)} would replace the source {Path.GetFullPath(sourceDirectory)}",
                nameof(outDir));
        var lora = model.Linears.Where(l => l.Lora is not null).ToDictionary(l => l.Name + ".weight", l => l);
        var specs = model.WeightNames.Select(name => new TensorSpec(name, dtype,
            (model.Parameters.TryGetValue(name, out var p) ? p.Shape : model.QuantizedWeights[name].Shape).Select(d => (long)d).ToArray())).ToList();
        IReadOnlyList<string> files = [];
        AtomicDirectory.Write(outDir, tmp =>
        {
            files = SafetensorsWriter.WriteShardedStreaming(tmp, "model", specs, maxShardBytes, spec =>
            {
                // A 4-bit weight is written dequantized (as PEFT's merge_and_unload on a bnb model).
                var w = model.Parameters.TryGetValue(spec.Name, out var tensor) ? tensor.ToFloatArray() : Dequantized(model.QuantizedWeights[spec.Name]);
                if (lora.TryGetValue(spec.Name, out var l))
                    Merge.AddDelta(w, l.LoraA!.ToFloatArray(), l.LoraB!.ToFloatArray(), l.OutFeatures, l.InFeatures, l.Lora!.R, l.Lora.Scaling);
                return SafetensorsWriter.Encode(w, dtype);
            });
            HfFiles.WriteConfig(model.Config.Raw ?? ConfigJson(model.Config), tmp, dtype);
            if (sourceDirectory is not null) HfFiles.CopyAuxiliary(sourceDirectory, tmp);
        });
        return files;
    }

    private static float[] Dequantized(Nf4Weight q)
    {
        using var w = q.Dequantize();
        return w.ToFloatArray();
    }

    /// <summary>config.json for a config built in code (formats.md §3.2; legacy rope keys, read by every transformers version).</summary>
    public static JsonObject ConfigJson(ModelConfig c)
    {
        var (architecture, modelType) = (c.Spec.ClassName, c.Spec.ModelType);
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(architecture),
            ["model_type"] = modelType,
            ["vocab_size"] = c.VocabSize,
            ["hidden_size"] = c.HiddenSize,
            ["intermediate_size"] = c.IntermediateSize,
            ["num_hidden_layers"] = c.NumHiddenLayers,
            ["num_attention_heads"] = c.NumAttentionHeads,
            ["num_key_value_heads"] = c.NumKeyValueHeads,
            ["head_dim"] = c.HeadDim,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["rms_norm_eps"] = c.RmsNormEps,
            ["rope_theta"] = c.RopeTheta,
            ["rope_scaling"] = c.RopeScaling.Type == "default" ? null : c.RopeScaling.Type == "llama3"
                ? new JsonObject
                {
                    ["rope_type"] = "llama3", ["factor"] = c.RopeScaling.Factor, ["low_freq_factor"] = c.RopeScaling.LowFreqFactor,
                    ["high_freq_factor"] = c.RopeScaling.HighFreqFactor,
                    ["original_max_position_embeddings"] = c.RopeScaling.OriginalMaxPositionEmbeddings,
                }
                : c.RopeScaling.Type == "longrope"
                ? new JsonObject
                {
                    ["type"] = "longrope", ["rope_type"] = "longrope", ["attention_factor"] = c.RopeScaling.AttentionFactor,
                    ["original_max_position_embeddings"] = c.RopeScaling.OriginalMaxPositionEmbeddings, ["factor"] = c.RopeScaling.Factor,
                    ["short_factor"] = new JsonArray(c.RopeScaling.ShortFactor!.Select(f => (JsonNode?)f).ToArray()),
                    ["long_factor"] = new JsonArray(c.RopeScaling.LongFactor!.Select(f => (JsonNode?)f).ToArray()),
                }
                : new JsonObject { ["type"] = c.RopeScaling.Type, ["rope_type"] = c.RopeScaling.Type, ["factor"] = c.RopeScaling.Factor },
            ["tie_word_embeddings"] = c.TieWordEmbeddings,
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = c.EosTokenIds.Count switch
            {
                0 => null,
                1 => c.EosTokenIds[0],
                _ => new JsonArray(c.EosTokenIds.Select(id => (JsonNode?)id).ToArray()),
            },
            ["pad_token_id"] = c.PadTokenId,
        };
        // The keys each family's ReadOptions reads back.
        switch (c.Architecture)
        {
            case Architecture.Llama:
                o["attention_bias"] = c.AttentionBias;
                o["mlp_bias"] = c.MlpBias;
                break;
            case Architecture.InternLM2 or Architecture.InternLM:
                o["bias"] = c.AttentionBias;
                break;
            case Architecture.Qwen3 or Architecture.Gemma3Text:
                o["attention_bias"] = c.AttentionBias;
                break;
        }
        o[c.Spec.ActivationKey] = c.HiddenAct;
        if (c.SlidingWindows.Any(w => w > 0))
        {
            o["sliding_window"] = c.SlidingWindows.Max();
            o["layer_types"] = new JsonArray(c.SlidingWindows.Select(w => (JsonNode?)(w > 0 ? "sliding_attention" : "full_attention")).ToArray());
            if (c.Architecture is Architecture.Qwen2 or Architecture.Qwen3) o["use_sliding_window"] = true;
        }
        else if (c.Architecture is Architecture.Mistral or Architecture.Gemma3Text) o["sliding_window"] = null;
        if (c.PartialRotaryDim is { } r) o["partial_rotary_factor"] = (double)r / c.HeadDim;
        if (c.QueryPreAttnScalar is { } qpas) o["query_pre_attn_scalar"] = qpas;
        if (c.LocalRopeTheta is { } local) o["rope_local_base_freq"] = local;
        if (c.Moe is { } moe)
        {
            o[c.Architecture == Architecture.Mixtral ? "num_local_experts" : "num_experts"] = moe.NumExperts;
            o["num_experts_per_tok"] = moe.NumExpertsPerTok;
            o["output_router_logits"] = moe.OutputRouterLogits;
            o["router_aux_loss_coef"] = moe.RouterAuxLossCoef;
            if (c.Architecture == Architecture.Qwen3Moe)
            {
                o["norm_topk_prob"] = moe.NormTopKProb;
                o["moe_intermediate_size"] = moe.ExpertIntermediateSize;
                o["decoder_sparse_step"] = 1;
                o["mlp_only_layers"] = new JsonArray(Enumerable.Range(0, c.NumHiddenLayers).Where(i => !moe.SparseLayers[i]).Select(i => (JsonNode?)i).ToArray());
            }
        }
        return o;
    }
}
