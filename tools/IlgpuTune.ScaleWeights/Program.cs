// A random Llama-shape model folder in HF layout (config.json, bf16 safetensors shards + index, tokenizer files copied
// from a folder) and, optionally, a PEFT LoRA adapter on every decoder linear — written by SafetensorsWriter one tensor at
// a time, so a 13.5 GB 7B-shape folder needs a few hundred MB of memory. Weights are random bf16 of magnitude 2^-7..2^-14
// (norms 1.0); the adapter is random fp32 with a non-zero lora_B, so a merge really changes every adapted weight.
//   IlgpuTune.ScaleWeights OUT --tokenizer DIR [--adapter DIR] [--r 64] [--shape 7b|mid|small] [--shard 5GB] [--seed 1]
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using IlgpuTune.IO;
using IlgpuTune.Model;
using IlgpuTune.Numerics;

var opts = new Dictionary<string, string>(StringComparer.Ordinal);
string? outDir = null;
for (int i = 0; i < args.Length; i++)
{
    if (args[i].StartsWith("--", StringComparison.Ordinal) && i + 1 < args.Length) opts[args[i][2..]] = args[++i];
    else if (outDir is null) outDir = args[i];
    else return Usage($"unexpected argument '{args[i]}'");
}
if (outDir is null || !opts.TryGetValue("tokenizer", out var tokenizerDir)) return Usage("OUT and --tokenizer DIR are required");
string shape = opts.GetValueOrDefault("shape", "7b");
// Llama-2-7B's config.json (hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab 32000); "mid" (1.1 GB) and "small"
// (4 MB) keep its form, for trying the benchmark quickly.
(int Hidden, int Inter, int Layers, int Heads, int Vocab) dims = shape switch
{
    "7b" => (4096, 11008, 32, 32, 32000),
    "mid" => (2048, 5504, 8, 16, 32000),
    "small" => (256, 688, 2, 4, 1000),
    _ => (0, 0, 0, 0, 0),
};
if (dims.Hidden == 0) return Usage($"--shape '{shape}': expected 7b, mid or small");
int r = int.Parse(opts.GetValueOrDefault("r", "64"), CultureInfo.InvariantCulture);
long shard = SafetensorsWriter.ParseSize(opts.GetValueOrDefault("shard", "5GB"));
ulong seed = ulong.Parse(opts.GetValueOrDefault("seed", "1"), CultureInfo.InvariantCulture);

Directory.CreateDirectory(outDir);
var config = new JsonObject
{
    ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama", ["vocab_size"] = dims.Vocab,
    ["hidden_size"] = dims.Hidden, ["intermediate_size"] = dims.Inter, ["num_hidden_layers"] = dims.Layers,
    ["num_attention_heads"] = dims.Heads, ["num_key_value_heads"] = dims.Heads, ["hidden_act"] = "silu",
    ["max_position_embeddings"] = 4096, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0, ["tie_word_embeddings"] = false,
    ["attention_bias"] = false, ["mlp_bias"] = false, ["torch_dtype"] = "bfloat16", ["bos_token_id"] = 1, ["eos_token_id"] = 2,
    ["initializer_range"] = 0.02,
};
AtomicFile.WriteAllText(Path.Combine(outDir, "config.json"), config.ToJsonString(new() { WriteIndented = true }) + "\n");
foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
    File.Copy(Path.Combine(tokenizerDir, f), Path.Combine(outDir, f), overwrite: true);
var model = ModelConfig.Load(outDir);
var expected = CausalLM.ExpectedWeights(model);
var index = expected.Select((e, i) => (e.Name, i)).ToDictionary(e => e.Name, e => (ulong)e.i, StringComparer.Ordinal);
var specs = expected.Select(e => new TensorSpec(e.Name, DType.BF16, [.. e.Shape.Select(d => (long)d)])).ToList();
SafetensorsWriter.WriteShardedStreaming(outDir, "model", specs, shard, spec =>
{
    var bytes = new byte[spec.ByteLength];
    if (spec.Name.EndsWith("norm.weight", StringComparison.Ordinal)) MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan()).Fill(0x3F80);
    else RandomBf16(bytes, seed * 1_000_003 + index[spec.Name]);
    return bytes;
});
Console.WriteLine($"wrote {outDir}: {specs.Sum(s => s.ByteLength) / 1e9:F2} GB in {specs.Count} tensors");

if (opts.TryGetValue("adapter", out var adapterDir))
{
    var linears = expected.Where(e => CausalLM.IsDecoderLinear(model, e.Name, e.Shape)).ToList();
    var adapterSpecs = new List<TensorSpec>();
    foreach (var (name, s) in linears)
    {
        string m = "base_model.model." + name[..^".weight".Length];
        adapterSpecs.Add(new TensorSpec(m + ".lora_A.weight", DType.F32, [r, s[1]]));
        adapterSpecs.Add(new TensorSpec(m + ".lora_B.weight", DType.F32, [s[0], r]));
    }
    Directory.CreateDirectory(adapterDir);
    var adapterIndex = adapterSpecs.Select((e, i) => (e.Name, i)).ToDictionary(e => e.Name, e => (ulong)e.i, StringComparer.Ordinal);
    SafetensorsWriter.WriteShardedStreaming(adapterDir, "adapter_model", adapterSpecs, long.MaxValue, spec =>
    {
        var bytes = new byte[spec.ByteLength];
        RandomF32(MemoryMarshal.Cast<byte, float>(bytes.AsSpan()), seed * 7_000_003 + adapterIndex[spec.Name]);
        return bytes;
    });
    var targets = linears.Select(l => l.Name.Split('.')[^2]).Distinct().Order(StringComparer.Ordinal).Select(t => (JsonNode)t);
    var adapterConfig = new JsonObject
    {
        ["base_model_name_or_path"] = Path.GetFullPath(outDir), ["bias"] = "none", ["fan_in_fan_out"] = false,
        ["inference_mode"] = true, ["lora_alpha"] = 2 * r, ["lora_dropout"] = 0.05, ["peft_type"] = "LORA", ["r"] = r,
        ["target_modules"] = new JsonArray([.. targets]), ["task_type"] = "CAUSAL_LM", ["use_dora"] = false, ["use_rslora"] = false,
    };
    AtomicFile.WriteAllText(Path.Combine(adapterDir, "adapter_config.json"), adapterConfig.ToJsonString(new() { WriteIndented = true }) + "\n");
    Console.WriteLine($"wrote {adapterDir}: r {r}, {linears.Count} linears, {adapterSpecs.Sum(s => s.ByteLength) / 1e9:F2} GB");
}
return 0;

static int Usage(string why)
{
    Console.Error.WriteLine($"error: {why}\nusage: IlgpuTune.ScaleWeights OUT --tokenizer DIR [--adapter DIR] [--r 64] [--shape 7b|mid|small] [--shard 5GB] [--seed 1]");
    return 2;
}

// bf16 bits: random sign, exponent 2^-7..2^-14, random 7-bit mantissa; chunks in parallel, each from its own SplitMix64
// stream, so the bytes depend on the seed alone.
static void RandomBf16(byte[] bytes, ulong seed)
{
    const int chunk = 1 << 20;
    int count = bytes.Length / 2;
    Parallel.For(0, (count + chunk - 1) / chunk, c =>
    {
        ulong state = seed * 0x9E3779B97F4A7C15UL + (ulong)c;
        var span = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan()).Slice(c * chunk, Math.Min(chunk, count - c * chunk));
        for (int i = 0; i < span.Length; i++)
        {
            ulong x = SplitMix(ref state);
            span[i] = (ushort)(((x & 1) << 15) | ((120 - ((x >> 1) & 7)) << 7) | ((x >> 8) & 0x7F));
        }
    });
}

// Uniform in [-0.05, 0.05).
static void RandomF32(Span<float> values, ulong seed)
{
    ulong state = seed * 0x9E3779B97F4A7C15UL;
    for (int i = 0; i < values.Length; i++) values[i] = (float)((SplitMix(ref state) >> 40) * (1.0 / (1 << 24)) - 0.5) * 0.1f;
}

static ulong SplitMix(ref ulong state)
{
    ulong z = state += 0x9E3779B97F4A7C15UL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    return z ^ (z >> 31);
}
