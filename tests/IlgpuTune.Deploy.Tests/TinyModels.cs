using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Deploy.Tests;

/// <summary>
/// The tiny fixture models (tests/fixtures/tiny/*: vocab 128, no tokenizer) with a byte-level BPE tokenizer of exactly 128
/// tokens written next to them: the 94 printable ASCII bytes, space and newline, 29 merges, and Qwen's three chat tokens
/// (ids 125-127), the Qwen2 split regex and a ChatML chat template. Text made of printable ASCII encodes fully.
/// </summary>
public static class TinyModels
{
    public static readonly string[] Fixtures = ["llama", "mistral", "qwen2", "internlm2", "qwen3", "internlm", "mixtral"];

    /// <summary>The product's embedded tiny default (a llama with a 559-token Qwen-style tokenizer).</summary>
    public static string EmbeddedDefault => Path.Combine(TestKit.Repo.Root, "src", "IlgpuTune.Training", "Assets", "tiny");

    public const string ChatTemplate =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// <summary>Copies fixture <paramref name="name"/> into <paramref name="dir"/>/<paramref name="name"/> with the tokenizer; returns
    /// the model folder (its LoRA adapter stays at tests/fixtures/tiny/NAME/adapter).</summary>
    public static string Prepare(string name, string dir)
    {
        string src = TestKit.Repo.Fixture(Path.Combine("tiny", name)), dst = Path.Combine(dir, name);
        Directory.CreateDirectory(dst);
        foreach (var f in new[] { "config.json", "model.safetensors", "generation_config.json" })
            if (File.Exists(Path.Combine(src, f))) File.Copy(Path.Combine(src, f), Path.Combine(dst, f));
        WriteTokenizer(dst);
        return dst;
    }

    public static string Adapter(string name) => TestKit.Repo.Fixture(Path.Combine("tiny", name, "adapter"));

    static void WriteTokenizer(string dir)
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 33; b <= 126; b++) vocab[ByteLevel.ByteToChar[b].ToString()] = vocab.Count;
        vocab[ByteLevel.ByteToChar[' '].ToString()] = vocab.Count;
        vocab[ByteLevel.ByteToChar['\n'].ToString()] = vocab.Count;
        string[][] merges =
        [
            ["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"], ["e", "r"], ["o", "n"], ["Ġ", "s"], ["r", "e"], ["a", "t"],
            ["e", "n"], ["Ġ", "c"], ["o", "r"], ["Ġ", "w"], ["i", "s"], ["Ġ", "o"], ["i", "t"], ["e", "s"], ["Ġ", "b"], ["a", "n"],
            ["Ġ", "f"], ["a", "r"], ["Ġ", "p"], ["l", "l"], ["o", "u"], ["Ġ", "m"], ["Ġc", "at"], ["Ġs", "at"], ["Ġo", "n"],
        ];
        foreach (var m in merges) vocab.Add(m[0] + m[1], vocab.Count);
        string[] specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
        var added = specials.Select((s, i) => (JsonNode)new JsonObject
        {
            ["id"] = vocab.Count + i, ["content"] = s, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        });
        const string regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray([.. added]),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
            },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["vocab"] = JsonSerializer.SerializeToNode(vocab),
                ["merges"] = new JsonArray([.. merges.Select(m => (JsonNode)(m[0] + " " + m[1]))]),
            },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject
        {
            ["tokenizer_class"] = "Qwen2Tokenizer", ["bos_token"] = null, ["eos_token"] = "<|im_end|>", ["pad_token"] = "<|endoftext|>",
            ["chat_template"] = ChatTemplate,
        }.ToJsonString());
    }
}
