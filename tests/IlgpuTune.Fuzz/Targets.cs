using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.IO;
using IlgpuTune.Model;
using IlgpuTune.Training;

namespace IlgpuTune.Fuzz;

/// <summary>
/// One reader under fuzz: it gets the input bytes as the file a user hands us (written under <c>work</c>, the way the
/// CLI reads it) and must either accept it or throw one of the readers' user-facing exceptions.
/// </summary>
public sealed record Target(string Name, InputKind Kind, string[] Tokens, Action<byte[], string> Run, string Description)
{
    /// <summary>
    /// The readers' contract (issue 13; /work/brief/error-contract.md): bad content is an InvalidDataException (or a
    /// subclass: ConfigException, DatasetException, TemplateException), an unsupported feature a NotSupportedException, a
    /// missing path FileNotFound/DirectoryNotFound. Anything else is unexpected.
    /// </summary>
    public static bool IsClearRejection(Exception e) =>
        e is InvalidDataException or NotSupportedException or FileNotFoundException or DirectoryNotFoundException
            or ConfigException or DatasetException or TemplateException;

    public override string ToString() => Name;
}

public static class Targets
{
    static readonly string[] JsonTokens = ["{", "}", "[", "]", "\"", ":", ",", "null", "true", "-1", "1e999", "\\ud800", "\\u0000", "\"\":", "0x10", "NaN"];

    public static readonly IReadOnlyList<Target> All =
    [
        new("safetensors", InputKind.Safetensors, [.. JsonTokens, "\"dtype\"", "\"F16\"", "\"BF16\"", "\"U8\"", "\"I64\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\""],
            Safetensors, "a .safetensors file: header, every tensor read"),
        new("torch", InputKind.Binary, ["PK\u0003\u0004", "\u0080\u0002", "\u0080\u0004", "c", "q", "}", ")", "R", ".", "torch\n_rebuild_tensor_v2", "FloatStorage", "persistent_load", "\u008a\u0004", "\u008b", "archive/data.pkl"],
            Torch, "a torch.save .bin (zip or legacy pickle): every tensor read"),
        new("tokenizer-json", InputKind.Json, [.. JsonTokens, "\"added_tokens\"", "\"id\"", "\"content\"", "\"merges\"", "\"vocab\"", "\"BPE\"", "\"WordPiece\"", "\"Unigram\"", "\"ByteLevel\"", "\"Sequence\"", "\"TemplateProcessing\""],
            TokenizerJson, "tokenizer.json (with the tiny tokenizer_config.json): load, encode, decode"),
        new("tokenizer-config", InputKind.Json, [.. JsonTokens, "\"added_tokens_decoder\"", "\"chat_template\"", "\"eos_token\"", "\"bos_token\"", "\"content\"", "\"add_bos_token\"", "\"2147483647\""],
            TokenizerConfigJson, "tokenizer_config.json (with the tiny tokenizer.json): load, encode, decode, render its chat_template"),
        new("sentencepiece", InputKind.Binary, ["\u000a", "\u0012", "\u001a", "\u0022", "\u0008\u0001", "\u0008\u0002", "\u00ff\u00ff\u00ff\u00ff\u000f", "<unk>", "\u2581"],
            SentencePiece, "a SentencePiece tokenizer.model (protobuf): load, encode, decode"),
        new("config-json", InputKind.Json, [.. JsonTokens, "\"hidden_size\"", "\"num_attention_heads\"", "\"head_dim\"", "\"num_key_value_heads\"", "\"vocab_size\"", "\"eos_token_id\"", "\"rope_scaling\"", "\"quantization_config\"", "\"model_type\"", "\"torch_dtype\""],
            ConfigJson, "a model's config.json"),
        new("yaml-config", InputKind.Text, [": ", "- ", "? ", "[", "]", "{", "}", "\t", "\n  ", "&a ", "*a", "!!binary ", "!!python/object ", "~", "null", "'", "\"", "#", "|", ">", "lora:", "lr: ", "max_length: ", "data_path: ", "<<: *a"],
            YamlConfig, "a training config (YAML)"),
        new("dataset-json", InputKind.Json, [.. JsonTokens, "\n", "\"messages\"", "\"role\"", "\"content\"", "\"conversation\"", "\"input\"", "\"output\"", "\"instruction\"", "\"description\"", "\"color\"", "\"text\"", "\"loss\""],
            DatasetJson, "a JSON / JSONL dataset, read with each map fn"),
        new("parquet", InputKind.Binary, ["PAR1", "\u0000\u0000\u0000\u0000", "\u0015", "\u0019", "\u001c", "\u0026", "\u00ff\u00ff\u00ff\u007f"],
            Parquet, "a parquet dataset"),
        new("bnb-quant-state", InputKind.Json, [.. JsonTokens, "\"quant_type\"", "\"nf4\"", "\"fp4\"", "\"blocksize\"", "\"shape\"", "\"nested_blocksize\"", "\"nested_offset\"", "\"dtype\"", "\"bfloat16\""],
            BnbQuantState, "a bitsandbytes 4-bit weight's quant_state JSON (with real packed weight, absmax and maps)"),
        new("jinja", InputKind.Text, ["{{", "}}", "{%", "%}", "{#", "#}", "macro", "endmacro", "call", "for", "in", "endfor", "if", "else", "endif", "set", "range(", "loop", "recursive", "|", "indent(", "center(", "*", "**", "~", "(", ")", "[", "]", "'", "\"", "messages", "namespace(", "raise_exception(", "divisibleby", "9999999999", "\\U0010ffff", "-", "+", "//", "%"],
            Jinja, "a chat template (Jinja): parse, render with two messages"),
    ];

    public static Target Get(string name) => All.FirstOrDefault(t => t.Name == name)
        ?? throw new UsageException($"unknown target '{name}'; targets: {string.Join(", ", All.Select(t => t.Name))}");

    // ---- harnesses ----

    const int MaxElements = 1 << 22;

    static string Write(string work, string name, byte[] data)
    {
        string p = Path.Combine(work, name);
        File.WriteAllBytes(p, data);
        return p;
    }

    static void Safetensors(byte[] data, string work)
    {
        using var f = SafetensorsFile.Open(Write(work, "model.safetensors", data));
        foreach (var t in f.Tensors)
            if (t.Shape.Aggregate(1L, (a, d) => a * Math.Max(d, 1)) < MaxElements)
            {
                f.ReadBytes(t.Name);
                if (t.DType is "F32" or "F16" or "BF16") f.ReadFloat32(t.Name);
            }
    }

    static void Torch(byte[] data, string work)
    {
        using var c = TorchCheckpoint.Open(Write(work, "pytorch_model.bin", data));
        foreach (var name in c.Names)
            if (c.Shape(name).Aggregate(1L, (a, d) => a * Math.Max(d, 1)) < MaxElements)
            {
                if (c.DTypeOf(name) is "F32" or "F16" or "BF16" or "F64") c.ReadFloat32(name);
                else c.ReadBytes(name);
            }
    }

    static readonly string Sample = "Hello world <|im_start|>user\n 123  ünïcödé 你好 \t\u00a0x<|im_end|>";

    static void Exercise(ITokenizer tok)
    {
        var ids = tok.Encode(Sample, true);
        tok.Decode(ids);
    }

    static string TinyAsset(string name) => Path.Combine(Seeds.RepoRoot, "src", "IlgpuTune.Training", "Assets", "tiny", name);

    static void TokenizerJson(byte[] data, string work)
    {
        string dir = Path.Combine(work, "tok");
        Directory.CreateDirectory(dir);
        Write(dir, "tokenizer.json", data);
        if (!File.Exists(Path.Combine(dir, "tokenizer_config.json"))) File.Copy(TinyAsset("tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
        Exercise(HfTokenizer.FromDirectory(dir));
    }

    static readonly JsonElement Messages = JsonDocument.Parse(
        """[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "#87ceeb"}]""").RootElement;

    static void TokenizerConfigJson(byte[] data, string work)
    {
        string dir = Path.Combine(work, "tokcfg");
        Directory.CreateDirectory(dir);
        Write(dir, "tokenizer_config.json", data);
        if (!File.Exists(Path.Combine(dir, "tokenizer.json"))) File.Copy(TinyAsset("tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        var config = TokenizerConfig.Load(dir);
        Exercise(HfTokenizer.FromDirectory(dir));
        if (ChatTemplates.Resolve("auto", config) is { } source)
            ChatTemplates.Render(JinjaTemplate.Parse(source), Messages, config, addGenerationPrompt: true);
    }

    static void SentencePiece(byte[] data, string work)
    {
        string dir = Path.Combine(work, "sp");
        Directory.CreateDirectory(dir);
        Write(dir, "tokenizer.model", data);
        Exercise(SentencePieceModelTokenizer.FromDirectory(dir));
    }

    static void ConfigJson(byte[] data, string work) => ModelConfig.Load(Write(work, "config.json", data));

    static void YamlConfig(byte[] data, string work) => TrainConfig.Load(Write(work, "cfg.yaml", data));

    static readonly DatasetFormat[] Formats = [DatasetFormat.Conversation, DatasetFormat.Alpaca, DatasetFormat.Oasst1, DatasetFormat.Colors, DatasetFormat.OpenAI];

    // The map fn from the input's length, the extension from its first byte (a JSON array is read as .json, as HF does).
    static void DatasetJson(byte[] data, string work) =>
        DatasetReader.Read(Write(work, data.Length > 0 && data[0] == '[' ? "data.json" : "data.jsonl", data), Formats[data.Length % Formats.Length]);

    static void Parquet(byte[] data, string work) => DatasetReader.Read(Write(work, "data.parquet", data), Formats[data.Length % Formats.Length]);

    // A real quantized weight of the bnb fixture, its quant_state replaced by the input.
    static readonly Lazy<(string Key, List<(string Name, string DType, long[] Shape, byte[] Data)> Tensors)> BnbWeight = new(() =>
    {
        using var f = SafetensorsFile.Open(Path.Combine(Seeds.RepoRoot, "tests", "fixtures", "bnb", "llama", "model.safetensors"));
        string qs = f.Tensors.First(t => t.Name.Contains(".quant_state.bitsandbytes__")).Name;
        string key = qs[..qs.IndexOf(".quant_state.", StringComparison.Ordinal)];
        var tensors = f.Tensors.Where(t => t.Name == key || t.Name.StartsWith(key + ".", StringComparison.Ordinal) && t.Name != qs)
            .Select(t => (t.Name, t.DType, t.Shape.ToArray(), f.ReadBytes(t.Name))).ToList();
        return (key, tensors);
    });

    static void BnbQuantState(byte[] data, string work)
    {
        var (key, tensors) = BnbWeight.Value;
        string path = Path.Combine(work, "bnb.safetensors");
        WriteSafetensors(path, [.. tensors, (key + ".quant_state.bitsandbytes__nf4", "U8", [data.Length], data)]);
        using var weights = WeightSource.Open(path);
        Bnb4Bit.Read(weights, key);
    }

    static void WriteSafetensors(string path, IReadOnlyList<(string Name, string DType, long[] Shape, byte[] Data)> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var t in tensors)
        {
            header[t.Name] = new { dtype = t.DType, shape = t.Shape, data_offsets = new[] { offset, offset + t.Data.Length } };
            offset += t.Data.Length;
        }
        byte[] h = JsonSerializer.SerializeToUtf8Bytes(header);
        using var f = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(len, h.Length);
        f.Write(len);
        f.Write(h);
        foreach (var t in tensors) f.Write(t.Data);
    }

    static void Jinja(byte[] data, string work)
    {
        var config = new TokenizerConfig { BosToken = "<s>", EosToken = "</s>" };
        ChatTemplates.Render(JinjaTemplate.Parse(Encoding.UTF8.GetString(data)), Messages, config, addGenerationPrompt: true);
    }
}
