// XTuner's reward model (xtuner/model/reward.py): the causal LM's last hidden state at the reward token, appended to each
// chosen / rejected sequence, through a scalar value head v_head = Linear(hidden, 1, bias=False). Exported as transformers'
// <Arch>ForSequenceClassification with num_labels 1 (the decoder under model.*, the head as score.weight [1, hidden]; the
// class scores the last non-pad token, which is the reward token), or for InternLM2, which transformers has no such class
// for, as XTuner's InternLM2ForRewardModel layout (model.*, v_head.weight, reward_token_id in config.json).
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Model;
using IlgpuTune.Numerics;

namespace IlgpuTune.Training.Preference;

public static class RewardModel
{
    public const string HeadName = "v_head.weight";

    private static readonly string[] TokenizerFiles =
    [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json",
        "merges.txt", "chat_template.jinja",
    ];

    /// <summary>nn.Linear's default init for v_head [1, hidden]: U(±1/√hidden).</summary>
    public static Tensor CreateHead(Device device, int hidden, int seed)
    {
        var rng = new Random(unchecked(seed * 31 + 7));
        float bound = 1f / MathF.Sqrt(hidden);
        var w = Enumerable.Range(0, hidden).Select(_ => (float)(rng.NextDouble() * 2 - 1) * bound).ToArray();
        var t = Tensor.FromArray(device, w, 1, hidden).Named(HeadName);
        t.RequiresGrad = true;
        return t;
    }

    /// <summary>Scores [positions] = v_head · hidden state at each of <paramref name="positions"/> (flat batch*seq indices).</summary>
    public static Tensor Scores(CausalLM model, Tensor head, int[] inputIds, int batch, int seq, int[]? positionIds, int[]? segmentIds,
        int[] positions, Random? rng)
    {
        using var hidden = model.HiddenStates(inputIds, batch, seq, positionIds, segmentIds, rng);
        using var at = Tensor.FromArray(model.Device, positions, positions.Length);
        using var picked = Ops.Embedding(at, hidden); // row gather [positions, hidden], its backward scatters into hidden
        using var scores = Ops.Linear(picked, head);
        return Ops.Reshape(scores, positions.Length);
    }

    /// <summary>The score of one sequence ids[seq] (ending with the reward token): v_head · the last hidden state.</summary>
    public static double Score(CausalLM model, Tensor head, int[] ids)
    {
        using var s = Scores(model, head, ids, 1, ids.Length, null, null, [ids.Length - 1], null);
        return s.ToFloatArray()[0];
    }

    /// <summary>The class transformers loads the exported folder with.</summary>
    public static string ExportClass(Architecture a) => a == Architecture.InternLM2
        ? "InternLM2ForRewardModel"
        : ArchitectureSpec.For(a).ClassName.Replace("ForCausalLM", "ForSequenceClassification", StringComparison.Ordinal);

    /// <summary>
    /// Writes the reward model to <paramref name="outDir"/> (atomically): float32 weights, LoRA merged, the LM head left out,
    /// the value head as score.weight (v_head.weight for InternLM2), config.json with the class, num_labels 1, pad_token_id
    /// and reward_token_id; tokenizer files copied from <paramref name="sourceDir"/>.
    /// </summary>
    public static void Export(CausalLM model, Tensor head, string outDir, string sourceDir, int rewardTokenId)
    {
        var c = model.Config;
        string headKey = c.Architecture == Architecture.InternLM2 ? "output.weight" : "lm_head.weight";
        string scoreKey = c.Architecture == Architecture.InternLM2 ? HeadName : "score.weight";
        var lora = model.Linears.Where(l => l.Lora is not null).ToDictionary(l => l.Name + ".weight", l => l);
        var names = model.WeightNames.Where(n => n != headKey).ToList();
        var specs = names.Select(n => new TensorSpec(n, DType.F32,
            (model.Parameters.TryGetValue(n, out var p) ? p.Shape : model.QuantizedWeights[n].Shape).Select(d => (long)d).ToArray()))
            .Append(new TensorSpec(scoreKey, DType.F32, [1, c.HiddenSize])).ToList();
        AtomicDirectory.Write(outDir, tmp =>
        {
            SafetensorsWriter.WriteShardedStreaming(tmp, "model", specs, 5L << 30, spec =>
            {
                if (spec.Name == scoreKey) return SafetensorsWriter.Encode(head.ToFloatArray(), DType.F32);
                float[] w;
                if (model.Parameters.TryGetValue(spec.Name, out var t)) w = t.ToFloatArray();
                else
                {
                    using var dense = model.QuantizedWeights[spec.Name].Dequantize();
                    w = dense.ToFloatArray();
                }
                if (lora.TryGetValue(spec.Name, out var l))
                    Merge.AddDelta(w, l.LoraA!.ToFloatArray(), l.LoraB!.ToFloatArray(), l.OutFeatures, l.InFeatures, l.Lora!.R, l.Lora.Scaling);
                return SafetensorsWriter.Encode(w, DType.F32);
            });
            var config = (JsonObject)(c.Raw ?? HfExport.ConfigJson(c)).DeepClone();
            config["architectures"] = new JsonArray(ExportClass(c.Architecture));
            config["num_labels"] = 1;
            config["id2label"] = new JsonObject { ["0"] = "LABEL_0" };
            config["label2id"] = new JsonObject { ["LABEL_0"] = 0 };
            config["reward_token_id"] = rewardTokenId;
            // The class scores each row's last token that is not pad_token_id: the reward token, as long as it is not the pad.
            if (config["pad_token_id"] is null) config["pad_token_id"] = c.EosTokenIds.Count > 0 && c.EosTokenIds[0] != rewardTokenId ? c.EosTokenIds[0] : 0;
            config["torch_dtype"] = "float32";
            if (config["auto_map"] is JsonObject map && c.Architecture == Architecture.InternLM2)
            {
                map.Remove("AutoModelForCausalLM");
                map["AutoModel"] = "modeling_internlm2.InternLM2ForRewardModel";
            }
            File.WriteAllText(Path.Combine(tmp, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            foreach (string n in TokenizerFiles.Where(n => File.Exists(Path.Combine(sourceDir, n))).Concat(Directory.GetFiles(sourceDir, "*.py").Select(Path.GetFileName))!)
                File.Copy(Path.Combine(sourceDir, n), Path.Combine(tmp, n), overwrite: true);
        });
    }

    /// <summary>
    /// Loads an exported reward model folder: the decoder (a zero LM head stands in; scoring never uses it), the value head
    /// and reward_token_id.
    /// </summary>
    public static (CausalLM Model, Tensor Head, int RewardTokenId) Load(string dir, Device device)
    {
        string cfgPath = Path.Combine(dir, "config.json");
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"{dir}: no config.json (not a reward model folder written by train)");
        var raw = (JsonObject)JsonNode.Parse(File.ReadAllText(cfgPath))!;
        int rewardToken = raw["reward_token_id"]?.GetValue<int>()
            ?? throw new InvalidDataException($"{cfgPath}: no reward_token_id (not a reward model written by ilgpu-tune train with preference: reward)");
        var causal = (JsonObject)raw.DeepClone();
        causal["architectures"] = null;
        var config = ModelConfig.FromJson(causal, cfgPath);
        string headKey = config.Architecture == Architecture.InternLM2 ? "output.weight" : "lm_head.weight";
        string scoreKey = config.Architecture == Architecture.InternLM2 ? HeadName : "score.weight";
        using var weights = WeightSource.Open(dir);
        if (!weights.Contains(scoreKey)) throw new InvalidDataException($"{dir}: missing the value head '{scoreKey}'");
        var scoreShape = weights.Shape(scoreKey);
        if (scoreShape.Length != 2 || scoreShape[0] != 1 || scoreShape[1] != config.HiddenSize)
            throw new InvalidDataException($"{dir}: '{scoreKey}' has shape [{string.Join(", ", scoreShape)}], expected [1, {config.HiddenSize}]");
        var model = CausalLM.FromWeights(config, device, weights.Names.Where(n => n != scoreKey).Append(headKey).Distinct(),
            n => n == headKey ? [config.VocabSize, config.HiddenSize] : weights.Contains(n) ? weights.Shape(n) : null,
            n => n == headKey ? new float[(long)config.VocabSize * config.HiddenSize] : weights.ReadFloat32(n), dir);
        var head = Tensor.FromArray(device, weights.ReadFloat32(scoreKey), 1, config.HiddenSize).Named(HeadName);
        return (model, head, rewardToken);
    }
}
