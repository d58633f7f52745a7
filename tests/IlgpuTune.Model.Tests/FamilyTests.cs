using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Model.Generation;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// The families added as specs: a tiny random model written here in the HF layout (config keys and weight names typed
/// from transformers' configuration_*.py / modeling_*.py, not from our schema) loads, trains LoRA and QLoRA, exports,
/// merges, and generates with a KV cache exactly as the uncached forward.
/// </summary>
public class FamilyTests
{
    const int Vocab = 96, Hidden = 32, Inter = 48, Layers = 2;

    public static TheoryData<string> Names => new() { "qwen3", "internlm", "phi3", "gemma3_text", "mistral_sw", "mixtral", "qwen3_moe" };

    // config.json as the family's real checkpoints spell it.
    static JsonObject Config(string family) => JsonNode.Parse(family switch
    {
        "qwen3" => """
            {"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":96,"hidden_size":32,"intermediate_size":48,
             "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"hidden_act":"silu",
             "max_position_embeddings":128,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"attention_bias":false,
             "use_sliding_window":false,"sliding_window":null,"max_window_layers":2,
             "layer_types":["full_attention","full_attention"],"tie_word_embeddings":false,"torch_dtype":"float32",
             "bos_token_id":1,"eos_token_id":2}
            """,
        "internlm" => """
            {"architectures":["InternLMForCausalLM"],"auto_map":{"AutoConfig":"configuration_internlm.InternLMConfig",
             "AutoModelForCausalLM":"modeling_internlm.InternLMForCausalLM"},"model_type":"internlm","vocab_size":96,
             "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,"hidden_act":"silu",
             "max_position_embeddings":128,"rms_norm_eps":1e-6,"bias":true,"rotary":{"base":10000,"type":"dynamic"},
             "tie_word_embeddings":false,"torch_dtype":"float32","bos_token_id":1,"eos_token_id":2,"pad_token_id":0}
            """,
        // Windows of 4 tokens bind within the 6- and 12-token test sequences; layer 0 slides, layer 1 is global.
        "gemma3_text" => """
            {"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","vocab_size":96,"hidden_size":32,
             "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
             "hidden_activation":"gelu_pytorch_tanh","max_position_embeddings":128,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
             "rope_local_base_freq":10000.0,"rope_scaling":{"rope_type":"linear","factor":8.0},"query_pre_attn_scalar":24,
             "sliding_window":4,"layer_types":["sliding_attention","full_attention"],"attention_bias":false,
             "final_logit_softcapping":null,"attn_logit_softcapping":null,"tie_word_embeddings":true,"torch_dtype":"float32",
             "bos_token_id":2,"eos_token_id":1,"pad_token_id":0}
            """,
        "mistral_sw" => """
            {"architectures":["MistralForCausalLM"],"model_type":"mistral","vocab_size":96,"hidden_size":32,"intermediate_size":48,
             "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu","max_position_embeddings":128,
             "rms_norm_eps":1e-5,"rope_theta":10000.0,"sliding_window":4,"tie_word_embeddings":false,"torch_dtype":"float32",
             "bos_token_id":1,"eos_token_id":2}
            """,
        "mixtral" => """
            {"architectures":["MixtralForCausalLM"],"model_type":"mixtral","vocab_size":96,"hidden_size":32,"intermediate_size":24,
             "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu","max_position_embeddings":128,
             "rms_norm_eps":1e-5,"rope_theta":1000000.0,"sliding_window":null,"num_local_experts":4,"num_experts_per_tok":2,
             "output_router_logits":true,"router_aux_loss_coef":0.02,"router_jitter_noise":0.0,"tie_word_embeddings":false,
             "torch_dtype":"float32","bos_token_id":1,"eos_token_id":2}
            """,
        // Layer 1 is in mlp_only_layers: Qwen3's dense MLP of intermediate_size; layer 0 is sparse.
        "qwen3_moe" => """
            {"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe","vocab_size":96,"hidden_size":32,"intermediate_size":48,
             "moe_intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
             "hidden_act":"silu","max_position_embeddings":128,"rms_norm_eps":1e-6,"rope_theta":1000000.0,"attention_bias":false,
             "use_sliding_window":false,"sliding_window":null,"max_window_layers":2,"decoder_sparse_step":1,"mlp_only_layers":[1],
             "num_experts":4,"num_experts_per_tok":2,"norm_topk_prob":true,"output_router_logits":true,"router_aux_loss_coef":0.02,
             "tie_word_embeddings":false,"torch_dtype":"float32","bos_token_id":1,"eos_token_id":2}
            """,
        _ => """
            {"architectures":["Phi3ForCausalLM"],"model_type":"phi3","vocab_size":96,"hidden_size":32,"intermediate_size":48,
             "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu",
             "max_position_embeddings":128,"original_max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_theta":10000.0,
             "rope_scaling":null,"partial_rotary_factor":0.5,"sliding_window":127,"tie_word_embeddings":false,
             "torch_dtype":"float32","bos_token_id":1,"eos_token_id":2,"pad_token_id":0}
            """,
    })!.AsObject();

    // Every checkpoint key with its shape, as the family's modeling code names its modules.
    static List<(string Name, long[] Shape)> HfKeys(string family)
    {
        int heads = 4, kv = family == "internlm" ? 4 : 2, d = family is "qwen3" or "gemma3_text" or "qwen3_moe" ? 16 : 8;
        var keys = new List<(string, long[])> { ("model.embed_tokens.weight", [Vocab, Hidden]) };
        for (int i = 0; i < Layers; i++)
        {
            string p = $"model.layers.{i}.";
            keys.Add((p + "input_layernorm.weight", [Hidden]));
            keys.Add((p + "post_attention_layernorm.weight", [Hidden]));
            keys.Add((p + "self_attn.o_proj.weight", [Hidden, heads * d]));
            if (family == "phi3")
            {
                keys.Add((p + "self_attn.qkv_proj.weight", [(heads + 2 * kv) * d, Hidden]));
                keys.Add((p + "mlp.gate_up_proj.weight", [2 * Inter, Hidden]));
                keys.Add((p + "mlp.down_proj.weight", [Hidden, Inter]));
                continue;
            }
            keys.Add((p + "self_attn.q_proj.weight", [heads * d, Hidden]));
            keys.Add((p + "self_attn.k_proj.weight", [kv * d, Hidden]));
            keys.Add((p + "self_attn.v_proj.weight", [kv * d, Hidden]));
            // Sparse MLPs: the router and per-expert linears, as the hub's safetensors store them.
            if (family == "mixtral" || (family == "qwen3_moe" && i == 0))
            {
                var (router, experts, gate, up, down) = family == "mixtral"
                    ? ("block_sparse_moe.gate", "block_sparse_moe.experts", "w1", "w3", "w2")
                    : ("mlp.gate", "mlp.experts", "gate_proj", "up_proj", "down_proj");
                keys.Add((p + router + ".weight", [4, Hidden]));
                for (int e = 0; e < 4; e++)
                {
                    keys.Add((p + $"{experts}.{e}.{gate}.weight", [24, Hidden]));
                    keys.Add((p + $"{experts}.{e}.{up}.weight", [24, Hidden]));
                    keys.Add((p + $"{experts}.{e}.{down}.weight", [Hidden, 24]));
                }
            }
            else
            {
                keys.Add((p + "mlp.gate_proj.weight", [Inter, Hidden]));
                keys.Add((p + "mlp.up_proj.weight", [Inter, Hidden]));
                keys.Add((p + "mlp.down_proj.weight", [Hidden, Inter]));
            }
            if (family == "gemma3_text")
            {
                keys.Add((p + "pre_feedforward_layernorm.weight", [Hidden]));
                keys.Add((p + "post_feedforward_layernorm.weight", [Hidden]));
            }
            if (family is "qwen3" or "gemma3_text" or "qwen3_moe")
            {
                keys.Add((p + "self_attn.q_norm.weight", [d]));
                keys.Add((p + "self_attn.k_norm.weight", [d]));
            }
            if (family == "internlm")
            {
                foreach (var (m, n) in new[] { ("q", heads), ("k", kv), ("v", kv) })
                    keys.Add((p + $"self_attn.{m}_proj.bias", [n * d]));
                keys.Add((p + "self_attn.o_proj.bias", [Hidden]));
            }
        }
        keys.Add(("model.norm.weight", [Hidden]));
        if (family != "gemma3_text") keys.Add(("lm_head.weight", [Vocab, Hidden])); // Gemma ties it to the embedding
        return keys;
    }

    // PEFT's target names for the family's linears.
    static string[] Targets(string family) => family switch
    {
        "phi3" => ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        "mixtral" => ["q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"],
        _ => ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    };

    // The linears PEFT would wrap for these targets: 2-D weights whose module name ends in one.
    static int TargetCount(string family) => HfKeys(family).Count(k => k.Shape.Length == 2 && k.Name.EndsWith(".weight")
        && Targets(family).Contains(k.Name[..^".weight".Length].Split('.')[^1]));

    static string WriteModel(TempDir tmp, string family, string name = "model")
    {
        string dir = Path.Combine(tmp.Path, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), Config(family).ToJsonString());
        int seed = 0;
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), HfKeys(family).Select(k =>
        {
            int n = (int)k.Shape.Aggregate(1L, (a, b) => a * b);
            var data = Rand.Floats(++seed, n, k.Name.Contains("norm") ? 0.2f : 0.15f);
            // Norm weights near their identity: 1, or 0 for Gemma's (1 + w).
            if (k.Name.Contains("norm") && family != "gemma3_text") for (int i = 0; i < n; i++) data[i] += 1f;
            return SafetensorsWriter.F32(k.Name, data, k.Shape);
        }));
        return dir;
    }

    static readonly int[] Ids = [1, 17, 90, 3, 64, 5, 0, 42, 42, 5, 88, 7];

    static float[] Logits(CausalLM model, int[] ids)
    {
        using var _ = Tape.NoGrad();
        using var logits = model.Forward(ids, 2, ids.Length / 2);
        return logits.ToFloatArray();
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Schema_IsTheHfLayout_AndConfigKeysAreRead(string family)
    {
        var config = ModelConfig.FromJson(Config(family), "config.json");
        Assert.Equal(HfKeys(family).Select(k => (k.Name, string.Join(",", k.Shape))).Order(),
            CausalLM.ExpectedWeights(config).Select(e => (e.Name, string.Join(",", e.Shape))).Order());
        switch (family)
        {
            case "qwen3":
                Assert.Equal(16, config.HeadDim); // explicit head_dim, not hidden / heads
                Assert.All(config.SlidingWindows, w => Assert.Equal(0, w));
                break;
            case "internlm":
                Assert.Equal(4, config.NumKeyValueHeads); // no num_key_value_heads key: MHA
                Assert.True(config.AttentionBias && config.OutputBias);
                Assert.Equal(("dynamic", 10000.0), (config.RopeScaling.Type, config.RopeTheta));
                break;
            case "phi3":
                Assert.Equal(4, config.RotaryDim);
                Assert.Equal([127, 127], config.SlidingWindows);
                break;
            case "gemma3_text":
                Assert.Equal([4, 0], config.SlidingWindows);
                Assert.Equal((10000.0, 1000000.0, "linear"), (config.LocalRopeTheta, config.RopeTheta, config.RopeScaling.Type));
                Assert.Equal(("gelu_pytorch_tanh", 24.0, true), (config.HiddenAct, config.QueryPreAttnScalar, config.TieWordEmbeddings));
                break;
            case "mixtral":
                Assert.Equal((4, 2, true, 24), (config.Moe!.NumExperts, config.Moe.NumExpertsPerTok, config.Moe.NormTopKProb, config.Moe.ExpertIntermediateSize));
                Assert.Equal([true, true], config.Moe.SparseLayers);
                break;
            case "qwen3_moe":
                Assert.Equal([true, false], config.Moe!.SparseLayers);
                Assert.Equal((true, 0.02), (config.Moe.OutputRouterLogits, config.Moe.RouterAuxLossCoef));
                break;
            case "mistral_sw":
                Assert.Equal([4, 4], config.SlidingWindows);
                break;
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void LoraAndQLora_TrainAFewSteps(string family)
    {
        using var tmp = new TempDir();
        string dir = WriteModel(tmp, family);
        using var device = Device.Create("cpu");
        int[] labels = [.. Ids];
        foreach (var quant in new QuantType?[] { null, QuantType.Nf4 })
        {
            using var model = ModelLoader.Load(dir, device, quantization: quant);
            var adapted = model.ApplyLora(new LoraConfig(4, 8, 0, Targets(family)), seed: 1);
            Assert.Equal(TargetCount(family), adapted.Count);
            model.GradientCheckpointing = quant is not null; // as QLoRA configs train
            var losses = new List<float>();
            for (int step = 0; step < 4; step++)
            {
                using var tape = new Tape();
                using var loss = model.Loss(Ids, labels, 2, Ids.Length / 2);
                losses.Add(loss.ToFloatArray()[0]);
                tape.Backward(loss);
                foreach (var p in model.TrainableParameters)
                {
                    var w = p.ToFloatArray();
                    var g = p.Grad!.ToFloatArray();
                    for (int i = 0; i < w.Length; i++) w[i] -= 0.5f * g[i];
                    p.CopyFrom(w);
                }
                model.ZeroGrad();
            }
            Assert.True(losses[^1] < losses[0] - 1e-3, $"{family} {quant}: loss {string.Join(" → ", losses)} did not fall");
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void ExportLoadsBack_AndMergeEqualsAdapterOnBase(string family)
    {
        using var tmp = new TempDir();
        string dir = WriteModel(tmp, family);
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(dir, device);
        model.ApplyLora(new LoraConfig(4, 8, 0, Targets(family)), seed: 2);
        foreach (var l in model.Linears.Where(l => l.Lora is not null))
            l.LoraB!.CopyFrom(Rand.Floats(l.Name.Length, (int)l.LoraB.Length, 0.2f));
        var adapted = Logits(model, Ids);
        using (var plain = ModelLoader.Load(dir, device))
            Assert.True(Logits(plain, Ids).Zip(adapted).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, "the adapter changes nothing");

        string adapter = Path.Combine(tmp.Path, "adapter");
        PeftAdapter.Save(adapter, model, dir);
        string merged = Path.Combine(tmp.Path, "merged");
        Merge.Run(dir, adapter, merged, 1L << 30, DType.F32);
        using (var m = ModelLoader.Load(merged, device))
            Close.Assert($"{family} merged vs adapter on base", adapted, Logits(m, Ids), 1e-5, 1e-4);

        string exported = Path.Combine(tmp.Path, "export");
        HfExport.Save(model, exported, DType.F32, 1L << 30, dir);
        using (var e = ModelLoader.Load(exported, device))
        {
            Assert.Equal(model.Config.ModelType, e.Config.ModelType);
            Close.Assert($"{family} export vs model", adapted, Logits(e, Ids), 1e-5, 1e-4);
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void KvCacheGeneration_EqualsTheUncachedForward(string family)
    {
        using var tmp = new TempDir();
        string dir = WriteModel(tmp, family);
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(dir, device);
        int vocab = model.Config.VocabSize, seq = Ids.Length;
        float[] expected;
        using (Tape.NoGrad())
        using (var logits = model.Forward(Ids, 1, seq))
            expected = logits.ToFloatArray();
        using var cache = new KvCache(model.Config, device);
        using (var prefix = model.ForwardCached(Ids[..5], cache, allPositions: true))
            Close.Assert($"{family} prefill", expected.AsSpan(0, 5 * vocab), prefix.ToFloatArray(), 1e-5, 1e-4);
        for (int t = 5; t < seq; t++)
        {
            using var step = model.ForwardCached(Ids[t..(t + 1)], cache);
            Close.Assert($"{family} step {t}", expected.AsSpan(t * vocab, vocab), step.ToFloatArray(), 1e-5, 1e-4);
        }
    }

    // output_router_logits adds router_aux_loss_coef × the load-balancing loss, E·Σ f_e P_e, which lies in (0, K·E]
    // (Σ f_e = K, P_e ≤ 1); its gradient reaches the routers.
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen3_moe")]
    public void RouterAuxLoss_IsAddedToTheLoss(string family)
    {
        using var tmp = new TempDir();
        string dir = WriteModel(tmp, family);
        using var device = Device.Create("cpu");
        float Loss(bool aux, bool routerGrad)
        {
            var config = Config(family);
            config["output_router_logits"] = aux;
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            using var model = ModelLoader.Load(dir, device);
            model.SetFullFineTuning();
            using var tape = new Tape();
            using var loss = model.Loss(Ids, Ids, 2, Ids.Length / 2);
            tape.Backward(loss);
            var router = model.Layers[0].Router!.Weight!;
            Assert.Equal(routerGrad, router.Grad!.ToFloatArray().Any(g => g != 0));
            return loss.ToFloatArray()[0];
        }
        float diff = Loss(aux: true, routerGrad: true) - Loss(aux: false, routerGrad: true);
        Assert.InRange(diff / 0.02f, 1e-3f, 2 * 4);
    }

    // Mistral's sliding_window (ignored before): a query sees only the last 4 keys, so the logits of the first 4 positions
    // are those of full attention and every later one differs.
    [Fact]
    public void SlidingWindow_ChangesOnlyThePositionsPastIt()
    {
        using var tmp = new TempDir();
        string dir = WriteModel(tmp, "mistral_sw");
        using var device = Device.Create("cpu");
        float[] Run()
        {
            using var model = ModelLoader.Load(dir, device);
            using var _ = Tape.NoGrad();
            using var logits = model.Forward(Ids, 1, Ids.Length);
            return logits.ToFloatArray();
        }
        var windowed = Run();
        var config = Config("mistral_sw");
        config["sliding_window"] = null;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var full = Run();
        for (int t = 0; t < Ids.Length; t++)
        {
            double diff = Enumerable.Range(t * Vocab, Vocab).Max(i => Math.Abs(windowed[i] - full[i]));
            if (t < 4) Assert.True(diff == 0, $"position {t}: {diff}");
            else Assert.True(diff > 1e-4, $"position {t} is not windowed");
        }
    }

    // Phi-3 longrope (Phi-3.5 / Phi-4-mini): inv_freq = 1 / (ext_j · theta^(2j/r)) with the short factors while
    // max(position) + 1 <= original_max_position_embeddings and the long ones past it, cos/sin × sqrt(1 + ln(max/orig) / ln(orig));
    // the pass-through dims of partial rotary keep cos 1, sin 0.
    [Fact]
    public void Phi3LongRope_SwitchesFactorsPastTheOriginalContext()
    {
        var json = Config("phi3");
        json["max_position_embeddings"] = 256;
        json["original_max_position_embeddings"] = 16;
        json["rope_scaling"] = JsonNode.Parse("""{"type":"longrope","short_factor":[1.0,1.5],"long_factor":[2.0,8.0]}""");
        var config = ModelConfig.FromJson(json, "config.json");
        Assert.Equal("longrope", config.RopeScaling.Type);
        double attention = Math.Sqrt(1 + Math.Log(16.0) / Math.Log(16));
        using var device = Device.Create("cpu");
        using var model = CausalLM.CreateRandom(config, device, seed: 0);
        foreach (var (positions, ext) in new[] { (new[] { 0, 3, 15 }, new[] { 1.0, 1.5 }), (new[] { 2, 16 }, new[] { 2.0, 8.0 }) })
        {
            var (cos, sin) = model.RotaryTables(positions);
            int half = config.HeadDim / 2;
            for (int t = 0; t < positions.Length; t++)
                for (int j = 0; j < half; j++)
                {
                    double inv = j < 2 ? 1 / (ext[j] * Math.Pow(10000, 2.0 * j / 4)) : 0;
                    Assert.Equal(j < 2 ? Math.Cos(positions[t] * inv) * attention : 1, cos[t * half + j], 4);
                    Assert.Equal(j < 2 ? Math.Sin(positions[t] * inv) * attention : 0, sin[t * half + j], 4);
                }
        }
        var bad = Config("phi3");
        bad["rope_scaling"] = JsonNode.Parse("""{"type":"longrope","short_factor":[1.0],"long_factor":[2.0,8.0]}""");
        var e = Assert.Throws<InvalidDataException>(() => ModelConfig.FromJson(bad, "config.json"));
        Assert.Contains("'short_factor' has 1 entries, expected rotary dims / 2 = 2", e.Message);
    }

    // HF's partial rotary (rotate_half on the first r dims, the rest passed through) as a direct formula; the decoder's
    // reordered full-width rope must give the same q·k for every head pair.
    [Fact]
    public void PartialRotary_GivesHfScores()
    {
        var config = ModelConfig.FromJson(Config("phi3"), "config.json");
        int d = config.HeadDim, r = config.RotaryDim, heads = config.NumAttentionHeads, kvHeads = config.NumKeyValueHeads;
        int[] positions = [3, 11];
        var q = Rand.Floats(5, 2 * heads * d);
        var k = Rand.Floats(6, 2 * kvHeads * d);
        var inv = config.RopeScaling.InverseFrequencies(r, config.RopeTheta);
        float[] Hf(float[] x, int nHeads)
        {
            var y = (float[])x.Clone();
            for (int t = 0; t < 2; t++)
                for (int h = 0; h < nHeads; h++)
                    for (int j = 0; j < r / 2; j++)
                    {
                        int a = (t * nHeads + h) * d + j, b = a + r / 2;
                        float angle = positions[t] * inv[j], c = MathF.Cos(angle), s = MathF.Sin(angle);
                        y[a] = x[a] * c - x[b] * s;
                        y[b] = x[b] * c + x[a] * s;
                    }
            return y;
        }
        using var device = Device.Create("cpu");
        float[] cosData, sinData;
        using (var model = CausalLM.CreateRandom(config, device, seed: 0))
            (cosData, sinData) = model.RotaryTables(positions);
        float[] Ours(float[] x, int nHeads)
        {
            using var xt = Tensor.FromArray(device, x, 2, nHeads * d);
            var cols = CausalLM.PartialRotaryColumns(nHeads, d, r);
            using var index = Tensor.FromArray(device, cols, cols.Length);
            using var reordered = Ops.ColumnGather(xt, index);
            using var cos = Tensor.FromArray(device, cosData, 2, d / 2);
            using var sin = Tensor.FromArray(device, sinData, 2, d / 2);
            using var roped = Ops.Rope(reordered, cos, sin, nHeads, d);
            return roped.ToFloatArray();
        }
        float Dot(float[] a, int ai, float[] b, int bi) => Enumerable.Range(0, d).Sum(j => a[ai + j] * b[bi + j]);
        var (hq, hk, oq, ok) = (Hf(q, heads), Hf(k, kvHeads), Ours(q, heads), Ours(k, kvHeads));
        for (int tq = 0; tq < 2; tq++)
            for (int tk = 0; tk < 2; tk++)
                for (int h = 0; h < heads; h++)
                {
                    int qi = (tq * heads + h) * d, ki = (tk * kvHeads + h / (heads / kvHeads)) * d;
                    Assert.Equal(Dot(hq, qi, hk, ki), Dot(oq, qi, ok, ki), 4);
                }
    }

}
