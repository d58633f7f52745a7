using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.IO;
using IlgpuTune.Model;

namespace IlgpuTune.Cli.Tests;

/// <summary>
/// A random tiny Qwen2 model folder with a hand-made byte-level BPE tokenizer (256 bytes, a few merges, Qwen's chat
/// tokens) and a LoRA adapter with non-zero B and dropout 0.1 (which chat must not apply), written to a temp folder.
/// </summary>
public sealed class TinyChatModel : IDisposable
{
    readonly TestKit.TempDir _dir = new();

    public TinyChatModel()
    {
        Directory.CreateDirectory(ModelDir);
        var vocab = new Dictionary<string, int>();
        foreach (char c in ByteLevel.ByteToChar) vocab[c.ToString()] = vocab.Count;
        string[][] merges = [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"]];
        foreach (var m in merges) vocab[m[0] + m[1]] = vocab.Count;
        string[] specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
        var added = specials.Select((s, i) => new JsonObject
        {
            ["id"] = vocab.Count + i, ["content"] = s, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        });
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray([.. added]),
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["vocab"] = JsonSerializer.SerializeToNode(vocab),
                ["merges"] = new JsonArray([.. merges.Select(m => (JsonNode)(m[0] + " " + m[1]))]),
            },
        };
        File.WriteAllText(Path.Combine(ModelDir, "tokenizer.json"), tokenizer.ToJsonString());
        File.WriteAllText(Path.Combine(ModelDir, "tokenizer_config.json"),
            """{"tokenizer_class": "Qwen2Tokenizer", "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}""");
        Tokenizer = HfTokenizer.FromDirectory(ModelDir);

        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen2ForCausalLM"), ["model_type"] = "qwen2", ["vocab_size"] = Tokenizer.VocabSize,
            ["hidden_size"] = 32, ["intermediate_size"] = 48, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2, ["head_dim"] = 8, ["max_position_embeddings"] = 512, ["rms_norm_eps"] = 1e-6,
            ["rope_theta"] = 10000.0, ["tie_word_embeddings"] = false, ["eos_token_id"] = vocab.Count, ["hidden_act"] = "silu",
        };
        File.WriteAllText(Path.Combine(ModelDir, "config.json"), config.ToJsonString());
        using var device = Device.Create("cpu");
        using var model = CausalLM.CreateRandom(ModelConfig.Load(ModelDir), device, seed: 3, initializerRange: 0.3f);
        SafetensorsWriter.Write(Path.Combine(ModelDir, "model.safetensors"), model.Parameters.Select(p =>
            SafetensorsWriter.F32(p.Key, p.Value.ToFloatArray(), [.. p.Value.Shape.Select(d => (long)d)])));
        var lora = model.ApplyLora(new LoraConfig(4, 8, 0.1f, ["q_proj", "v_proj", "down_proj"]), seed: 4);
        int seed = 10;
        foreach (var l in lora) l.LoraB!.CopyFrom(TestKit.Rand.Floats(seed++, (int)l.LoraB.Length, 0.5f));
        PeftAdapter.Save(AdapterDir, model, ModelDir);
    }

    public string ModelDir => Path.Combine(_dir.Path, "model");
    public string AdapterDir => Path.Combine(_dir.Path, "adapter");
    public HfTokenizer Tokenizer { get; }

    public void Dispose() => _dir.Dispose();
}
