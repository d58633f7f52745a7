// `convert gguf`: an HF model folder (+ an optional PEFT LoRA adapter, merged on the fly as `convert merge` does) -> one GGUF
// v3 file for llama.cpp, as llama.cpp's convert_hf_to_gguf.py writes it: general.architecture llama (Llama, Mistral and
// InternLM v1 and Mixtral (experts stacked), which llama.cpp runs as llama), qwen2, qwen3 (with its q/k norms) or internlm2; the {arch}.* hyperparameters; llama.cpp's tensor names; the q/k rows
// of llama-style attention permuted from HF's rotate-half order to llama.cpp's interleaved pairs (InternLM2's fused wqkv
// split into q, k, v first); Llama 3 rope scaling as the rope_freqs.weight tensor. Norms and biases are written F32, 2-D
// weights in the out type (Q8_0 / Q4_0 where rows fill whole blocks of 32, else F16; with q4_0 the output head is Q8_0,
// as llama-quantize keeps it above 4 bits). Streams one tensor at a time into AtomicFile.
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public enum GgufOutType { F16, BF16, Q8_0, Q4_0 }

/// <summary>What a GGUF export wrote: the file, its architecture, each tensor's type, and the modules the adapter changed.</summary>
public sealed record GgufSummary(string Path, string Architecture, IReadOnlyList<GgufTensorSpec> Tensors, IReadOnlyList<string> MergedModules);

public static class GgufExport
{
    public static GgufOutType ParseOutType(string s) => s switch
    {
        "f16" => GgufOutType.F16,
        "bf16" => GgufOutType.BF16,
        "q8_0" => GgufOutType.Q8_0,
        "q4_0" => GgufOutType.Q4_0,
        _ => throw new ArgumentException($"--outtype '{s}': expected f16, bf16, q8_0 or q4_0"),
    };

    /// <summary>llama.cpp's architecture name for a model family.</summary>
    public static string ArchitectureName(Architecture a) => a switch
    {
        // InternLM v1 is Llama with q/k/v/o biases, which llama.cpp's llama reads when present.
        Architecture.Llama or Architecture.Mistral or Architecture.InternLM or Architecture.Mixtral => "llama",
        Architecture.Qwen2 => "qwen2",
        Architecture.Qwen3 => "qwen3",
        Architecture.InternLM2 => "internlm2",
        _ => throw new NotSupportedException($"{a} models cannot be written as GGUF"),
    };

    /// <summary>
    /// Writes <paramref name="outFile"/> atomically from <paramref name="modelDir"/> (and <paramref name="adapterDir"/>),
    /// with <paramref name="tokenizerMetadata"/> (the tokenizer.ggml.* keys) after the model's own keys. Cancelling
    /// <paramref name="cancel"/> stops between tensors and leaves no file.
    /// </summary>
    public static GgufSummary Run(string modelDir, string outFile, IReadOnlyList<KeyValuePair<string, GgufValue>> tokenizerMetadata,
        GgufOutType outType, string? adapterDir = null, CancellationToken cancel = default)
    {
        var config = ModelConfig.Load(modelDir);
        string arch = ArchitectureName(config.Architecture);
        using var weights = WeightSource.Open(modelDir);
        var expected = CausalLM.ExpectedWeights(config);
        foreach (var (name, shape) in expected)
        {
            if (!weights.Contains(name)) throw new InvalidDataException($"{weights.Path}: missing tensor '{name}' (config.json implies it)");
            var actual = weights.Shape(name);
            if (!actual.SequenceEqual(shape.Select(d => (long)d)))
                throw new InvalidDataException($"{weights.Path}: tensor '{name}' has shape [{string.Join(", ", actual)}], " +
                    $"but config.json implies [{string.Join(", ", shape)}]");
            if (weights.DTypeOf(name) is not ("F32" or "F16" or "BF16" or "F64"))
                throw new InvalidDataException($"{weights.Path}: tensor '{name}' has dtype {weights.DTypeOf(name)}; GGUF export reads " +
                    "floating tensors only (a 4-bit quantized folder cannot be exported: use its bf16/fp16 original)");
        }
        var known = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in weights.Names)
            if (!known.Contains(name) && !name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal))
                throw new InvalidDataException($"{weights.Path}: tensor '{name}' is not part of a {config.ModelType} model with this config.json");
        if (config.Architecture == Architecture.InternLM2 && (config.AttentionBias || config.OutputBias))
            throw new NotSupportedException($"{modelDir}: InternLM2 with bias: true has attention biases, which llama.cpp's internlm2 ignores");

        IWeightSource? adapter = null;
        Dictionary<string, (string A, string B)> pairs = [];
        LoraConfig? lora = null;
        try
        {
            if (adapterDir is not null)
            {
                lora = PeftAdapter.ReadConfig(adapterDir);
                adapter = WeightSource.Open(adapterDir, PeftAdapter.WeightsFile, "adapter_model.bin");
                pairs = Merge.AdapterPairs(weights, adapter, lora);
            }
            var plan = Plan(config, outType);
            var metadata = Metadata(config, arch, outType, Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir))));
            metadata.AddRange(tokenizerMetadata);

            // One HF tensor (merged with its LoRA delta) is kept while the GGUF tensors cut from it are written.
            (string Name, float[] Values)? last = null;
            float[] Source(string name)
            {
                if (last is { } l && l.Name == name) return l.Values;
                var w = weights.ReadFloat32(name);
                if (pairs.TryGetValue(name, out var p))
                {
                    var shape = weights.Shape(name);
                    Merge.AddDelta(w, adapter!.ReadFloat32(p.A), adapter.ReadFloat32(p.B), (int)shape[0], (int)shape[1], lora!.R, lora.Scaling);
                }
                last = (name, w);
                return w;
            }
            var values = plan.ToDictionary(p => p.Spec.Name, p => p.Values, StringComparer.Ordinal);
            AtomicFile.Write(outFile, stream => GgufWriter.Write(stream, metadata, plan.Select(t => t.Spec).ToList(), spec =>
            {
                cancel.ThrowIfCancellationRequested();
                return Encode(values[spec.Name](Source), spec.Type);
            }));
            var merged = pairs.Keys.Select(k => k[..^".weight".Length]).Order(StringComparer.Ordinal).ToList();
            return new GgufSummary(Path.GetFullPath(outFile), arch, plan.Select(t => t.Spec).ToList(), merged);
        }
        finally
        {
            adapter?.Dispose();
        }
    }

    private static List<KeyValuePair<string, GgufValue>> Metadata(ModelConfig c, string arch, GgufOutType outType, string name)
    {
        var kv = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue value) => kv.Add(new(key, value));
        Add("general.architecture", GgufValue.Str(arch));
        Add("general.name", GgufValue.Str(name));
        // llama_ftype: the type most weights have.
        Add("general.file_type", GgufValue.U32(outType switch { GgufOutType.F16 => 1, GgufOutType.BF16 => 32, GgufOutType.Q8_0 => 7, _ => 2 }));
        Add("general.quantization_version", GgufValue.U32(2));
        Add($"{arch}.vocab_size", GgufValue.U32(c.VocabSize));
        Add($"{arch}.context_length", GgufValue.U32(c.MaxPositionEmbeddings));
        Add($"{arch}.embedding_length", GgufValue.U32(c.HiddenSize));
        Add($"{arch}.block_count", GgufValue.U32(c.NumHiddenLayers));
        Add($"{arch}.feed_forward_length", GgufValue.U32(c.IntermediateSize));
        Add($"{arch}.attention.head_count", GgufValue.U32(c.NumAttentionHeads));
        Add($"{arch}.attention.head_count_kv", GgufValue.U32(c.NumKeyValueHeads));
        Add($"{arch}.attention.key_length", GgufValue.U32(c.HeadDim));
        Add($"{arch}.attention.value_length", GgufValue.U32(c.HeadDim));
        Add($"{arch}.attention.layer_norm_rms_epsilon", GgufValue.F32(c.RmsNormEps));
        if (c.Moe is { } moe)
        {
            Add($"{arch}.expert_count", GgufValue.U32(moe.NumExperts));
            Add($"{arch}.expert_used_count", GgufValue.U32(moe.NumExpertsPerTok));
        }
        Add($"{arch}.rope.dimension_count", GgufValue.U32(c.HeadDim));
        Add($"{arch}.rope.freq_base", GgufValue.F32(c.RopeTheta));
        switch (c.RopeScaling.Type)
        {
            // dynamic NTK changes nothing up to max_position_embeddings, which is the context llama.cpp is told.
            case "default" or "dynamic" or "llama3": break;
            case "linear":
                Add($"{arch}.rope.scaling.type", GgufValue.Str("linear"));
                Add($"{arch}.rope.scaling.factor", GgufValue.F32(c.RopeScaling.Factor));
                break;
            default: throw new NotSupportedException($"rope_scaling type '{c.RopeScaling.Type}' has no GGUF form here (default, linear, dynamic, llama3)");
        }
        return kv;
    }

    private sealed record Planned(GgufTensorSpec Spec, Func<Func<string, float[]>, float[]> Values);

    // The GGUF tensors in llama.cpp's order (token_embd, per block, then output_norm, output), each with how to compute it.
    private static List<Planned> Plan(ModelConfig c, GgufOutType outType)
    {
        bool intern = c.Architecture == Architecture.InternLM2, llamaStyle = c.Architecture is Architecture.Llama or Architecture.Mistral or Architecture.InternLM or Architecture.Mixtral;
        int h = c.HiddenSize, d = c.HeadDim, qOut = c.NumAttentionHeads * d, kvOut = c.NumKeyValueHeads * d;
        // HF names (modeling_llama / modeling_internlm2), read here rather than from CausalLM's internals.
        string embed = intern ? "model.tok_embeddings.weight" : "model.embed_tokens.weight", head = intern ? "output.weight" : "lm_head.weight";
        var plan = new List<Planned>();
        void Add(string gguf, long[] shape, bool isHead, Func<Func<string, float[]>, float[]> values) =>
            plan.Add(new Planned(new GgufTensorSpec(gguf, TypeFor(shape, outType, isHead), shape), values));
        void Copy(string gguf, string hf, long[] shape, bool isHead = false) => Add(gguf, shape, isHead, src => src(hf));

        Copy("token_embd.weight", embed, [c.VocabSize, h], isHead: c.TieWordEmbeddings && !intern);
        if (c.RopeScaling.Type == "llama3") Add("rope_freqs.weight", [d / 2], false, _ => Llama3RopeFactors(c));
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string l = $"model.layers.{i}.", b = $"blk.{i}.";
            if (intern)
            {
                Copy(b + "attn_norm.weight", l + "attention_norm.weight", [h]);
                string qkv = l + "attention.wqkv.weight";
                Add(b + "attn_q.weight", [qOut, h], false, src => Permute(SplitWqkv(src(qkv), c, 0), c.NumAttentionHeads, d, h));
                Add(b + "attn_k.weight", [kvOut, h], false, src => Permute(SplitWqkv(src(qkv), c, 1), c.NumKeyValueHeads, d, h));
                Add(b + "attn_v.weight", [kvOut, h], false, src => SplitWqkv(src(qkv), c, 2));
                Copy(b + "attn_output.weight", l + "attention.wo.weight", [h, qOut]);
                Copy(b + "ffn_norm.weight", l + "ffn_norm.weight", [h]);
                Copy(b + "ffn_gate.weight", l + "feed_forward.w1.weight", [c.IntermediateSize, h]);
                Copy(b + "ffn_down.weight", l + "feed_forward.w2.weight", [h, c.IntermediateSize]);
                Copy(b + "ffn_up.weight", l + "feed_forward.w3.weight", [c.IntermediateSize, h]);
                continue;
            }
            Copy(b + "attn_norm.weight", l + "input_layernorm.weight", [h]);
            foreach (var (proj, gguf, rows, heads) in new[] { ("q", "attn_q", qOut, c.NumAttentionHeads), ("k", "attn_k", kvOut, c.NumKeyValueHeads),
                ("v", "attn_v", kvOut, 0) })
            {
                string hf = $"{l}self_attn.{proj}_proj.";
                bool permute = llamaStyle && heads > 0;
                Add($"{b}{gguf}.weight", [rows, h], false, src => permute ? Permute(src(hf + "weight"), heads, d, h) : src(hf + "weight"));
                if (c.AttentionBias)
                    Add($"{b}{gguf}.bias", [rows], false, src => permute ? Permute(src(hf + "bias"), heads, d, 1) : src(hf + "bias"));
            }
            if (c.Architecture == Architecture.Qwen3)
            {
                // Qwen3's per-head RMSNorm of q and k (over head_dim, before RoPE).
                Copy(b + "attn_q_norm.weight", l + "self_attn.q_norm.weight", [d]);
                Copy(b + "attn_k_norm.weight", l + "self_attn.k_norm.weight", [d]);
            }
            Copy(b + "attn_output.weight", l + "self_attn.o_proj.weight", [h, qOut]);
            if (c.OutputBias) Copy(b + "attn_output.bias", l + "self_attn.o_proj.bias", [h]);
            Copy(b + "ffn_norm.weight", l + "post_attention_layernorm.weight", [h]);
            if (c.Moe is { } moe)
            {
                // Mixtral: llama.cpp's llama with experts — the router, then each projection's experts stacked [E, rows, cols].
                int e = moe.NumExperts, inter = moe.ExpertIntermediateSize;
                string m = l + "block_sparse_moe.";
                Copy(b + "ffn_gate_inp.weight", m + "gate.weight", [e, h]);
                foreach (var (w, gguf, rows, cols) in new[] { ("w1", "ffn_gate_exps", inter, h), ("w2", "ffn_down_exps", h, inter),
                    ("w3", "ffn_up_exps", inter, h) })
                    Add($"{b}{gguf}.weight", [e, rows, cols], false, src =>
                    {
                        var stacked = new float[(long)e * rows * cols];
                        for (int x = 0; x < e; x++) src($"{m}experts.{x}.{w}.weight").CopyTo(stacked, (long)x * rows * cols);
                        return stacked;
                    });
                continue;
            }
            foreach (var (proj, gguf, rows, cols) in new[] { ("gate", "ffn_gate", c.IntermediateSize, h), ("down", "ffn_down", h, c.IntermediateSize),
                ("up", "ffn_up", c.IntermediateSize, h) })
            {
                Copy($"{b}{gguf}.weight", $"{l}mlp.{proj}_proj.weight", [rows, cols]);
                if (c.MlpBias) Copy($"{b}{gguf}.bias", $"{l}mlp.{proj}_proj.bias", [rows]);
            }
        }
        Copy("output_norm.weight", "model.norm.weight", [h]);
        // Tied heads: llama.cpp's llama and qwen2 reuse token_embd when output is absent; its internlm2 requires output.
        if (!c.TieWordEmbeddings) Copy("output.weight", head, [c.VocabSize, h], isHead: true);
        else if (intern) Copy("output.weight", embed, [c.VocabSize, h], isHead: true);
        return plan;
    }

    private static GgmlType TypeFor(long[] shape, GgufOutType outType, bool isHead)
    {
        if (shape.Length == 1) return GgmlType.F32;
        bool blocks = shape[^1] % Ggml.QK == 0;
        return outType switch
        {
            GgufOutType.F16 => GgmlType.F16,
            GgufOutType.BF16 => GgmlType.BF16,
            _ when !blocks => GgmlType.F16,
            GgufOutType.Q8_0 => GgmlType.Q8_0,
            _ => isHead ? GgmlType.Q8_0 : GgmlType.Q4_0,
        };
    }

    private static ReadOnlyMemory<byte> Encode(float[] values, GgmlType type) => type switch
    {
        GgmlType.F32 => SafetensorsWriter.Encode(values, DType.F32),
        GgmlType.F16 => SafetensorsWriter.Encode(values, DType.F16),
        GgmlType.BF16 => SafetensorsWriter.Encode(values, DType.BF16),
        GgmlType.Q8_0 => GgmlQuants.QuantizeQ8_0(values),
        GgmlType.Q4_0 => GgmlQuants.QuantizeQ4_0(values),
        _ => throw new ArgumentException($"no encoder for {type}"),
    };

    /// <summary>
    /// convert_hf_to_gguf's LlamaModel.permute: the rows of a q or k projection ([heads·D, cols], per head the first half of
    /// the rotary dims then the second) reordered so each head's pairs (j, j + D/2) sit side by side, as llama.cpp's rope
    /// expects: new row h·D + 2j + i = old row h·D + i·D/2 + j.
    /// </summary>
    public static float[] Permute(float[] w, int heads, int headDim, int cols)
    {
        var result = new float[w.Length];
        int half = headDim / 2;
        for (int hd = 0; hd < heads; hd++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < half; j++)
                    Array.Copy(w, ((long)hd * headDim + i * half + j) * cols, result, ((long)hd * headDim + 2 * j + i) * cols, cols);
        return result;
    }

    // InternLM2's wqkv [(kvHeads·(groups+2))·D, hidden]: per kv head, its `groups` q heads, then its k head, then its v head.
    // part 0 = all q rows, 1 = k rows, 2 = v rows, each in head order.
    private static float[] SplitWqkv(float[] wqkv, ModelConfig c, int part)
    {
        int d = c.HeadDim, h = c.HiddenSize, groups = c.KvGroups, stride = (groups + 2) * d;
        int headsOut = part == 0 ? c.NumAttentionHeads : c.NumKeyValueHeads;
        var result = new float[(long)headsOut * d * h];
        for (int kv = 0; kv < c.NumKeyValueHeads; kv++)
        {
            int rows = part == 0 ? groups * d : d, from = kv * stride + (part == 0 ? 0 : part == 1 ? groups * d : (groups + 1) * d);
            Array.Copy(wqkv, (long)from * h, result, (long)kv * rows * h, (long)rows * h);
        }
        return result;
    }

    // convert_hf_to_gguf's Llama 3 rope factors: 1 for high frequencies, `factor` for low ones, a smooth blend between;
    // llama.cpp divides each frequency by its factor.
    private static float[] Llama3RopeFactors(ModelConfig c)
    {
        var s = c.RopeScaling;
        double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor, highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        var factors = new float[c.HeadDim / 2];
        for (int j = 0; j < factors.Length; j++)
        {
            double freq = 1.0 / Math.Pow(c.RopeTheta, 2.0 * j / c.HeadDim), wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen) factors[j] = 1;
            else if (wavelen > lowWavelen) factors[j] = (float)s.Factor;
            else
            {
                double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                factors[j] = (float)(1 / ((1 - smooth) / s.Factor + smooth));
            }
        }
        return factors;
    }
}
