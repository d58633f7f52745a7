// bitsandbytes-serialized 4-bit Linear weights (formats.md §5.3-5.6), as transformers' save_pretrained of a bnb-4bit model
// writes them: per quantized Linear weight key W (bitsandbytes@95f9af3 Linear4bit._save_to_state_dict,
// QuantState.as_dict(packed=True), utils.pack_dict_to_tensor):
//   W                                   U8  [(n+1)/2, 1]   packed nibbles, element 2k in the high nibble (n = prod(shape))
//   W.absmax                            U8  [blocks] when nested (double quant), else F32 [blocks]; blocks = ceil(n/blocksize)
//   W.quant_map                         F32 [16]           4-bit code, index = nibble
//   W.nested_absmax                     F32 [ceil(blocks/256)]   nested only
//   W.nested_quant_map                  F32 [256]          nested only: the signed dynamic 8-bit map
//   W.quant_state.bitsandbytes__<type>  U8  [len]          UTF-8 of json.dumps({"quant_type", "blocksize", "dtype", "shape"
//                                                          [, "nested_blocksize", "nested_dtype", "nested_offset"]})
// and config.json carries "quantization_config" (BitsAndBytesConfig.to_dict(), keys sorted).
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>
/// One bitsandbytes 4-bit Linear weight on the host, as serialized. n = prod(<paramref name="Shape"/>),
/// blocks = ceil(n / <paramref name="BlockSize"/>).
/// </summary>
/// <param name="QuantType">"nf4" or "fp4".</param>
/// <param name="BlockSize">Elements per absmax block (64 for transformers; bnb allows powers of two 32..4096).</param>
/// <param name="DType">The original weight's dtype, which dequantization returns: "bfloat16", "float16" or "float32".</param>
/// <param name="Shape">The original weight's shape, e.g. [out_features, in_features].</param>
/// <param name="Packed">[(n+1)/2] bytes; byte k = q[2k] &lt;&lt; 4 | q[2k+1].</param>
/// <param name="QAbsmax">[blocks] 8-bit codes of absmax - offset; nested (double quant) only.</param>
/// <param name="Absmax">[blocks] fp32; not nested only.</param>
/// <param name="QuantMap">[16] the 4-bit code (index = nibble).</param>
/// <param name="NestedAbsmax">[ceil(blocks/NestedBlockSize)] fp32; nested only.</param>
/// <param name="NestedQuantMap">[256] the dynamic map QAbsmax indexes; nested only.</param>
/// <param name="NestedBlockSize">256 when nested, 0 otherwise.</param>
/// <param name="NestedOffset">mean of the absmax, added back on dequantization; 0 when not nested.</param>
public sealed record Bnb4BitWeight(string QuantType, int BlockSize, string DType, int[] Shape, byte[] Packed,
    byte[]? QAbsmax, float[]? Absmax, float[] QuantMap, float[]? NestedAbsmax, float[]? NestedQuantMap,
    int NestedBlockSize, float NestedOffset)
{
    public bool Nested => QAbsmax is not null;

    public long ElementCount => Shape.Aggregate(1L, (n, d) => n * d);

    public int Blocks => (int)Nf4Codec.Blocks(ElementCount, BlockSize);

    public Numerics.QuantType Type => QuantType == "nf4" ? Numerics.QuantType.Nf4 : Numerics.QuantType.Fp4;

    /// <summary>[blocks] fp32 absmax: <see cref="Absmax"/>, or the nested one dequantized as bnb does
    /// (dyn[q] * nested_absmax[b/256] + offset, two fp32 roundings).</summary>
    public float[] DequantizeAbsmax()
    {
        if (!Nested) return (float[])Absmax!.Clone();
        var absmax = new float[Blocks];
        Nf4Codec.DequantizeAbsmaxCpu(QAbsmax, NestedAbsmax, NestedOffset, NestedQuantMap, absmax);
        return absmax;
    }

    /// <summary>[n] fp32: quant_map[nibble] * absmax[i / blocksize], row-major in <see cref="Shape"/> (bnb rounds this to
    /// <see cref="DType"/>; SafetensorsWriter.Encode does the same rounding).</summary>
    public float[] Dequantize()
    {
        var y = new float[ElementCount];
        Nf4Codec.DequantizeCpu(Packed, DequantizeAbsmax(), QuantMap, BlockSize, y);
        return y;
    }

    /// <summary>Throws InvalidDataException, prefixed by <paramref name="where"/>, when the fields disagree with each other.</summary>
    public void Validate(string where)
    {
        void Need(bool ok, string what)
        {
            if (!ok) throw new InvalidDataException($"{where}: {what}");
        }
        Need(QuantType is "nf4" or "fp4", $"quant_type '{QuantType}' is not nf4 or fp4");
        Need(BlockSize is >= 32 and <= 4096 && (BlockSize & (BlockSize - 1)) == 0,
            $"blocksize {BlockSize} is not a power of two in 32..4096");
        Need(DType is "bfloat16" or "float16" or "float32", $"dtype '{DType}' is not bfloat16, float16 or float32");
        Need(Shape is not null && Shape.All(d => d >= 0), "shape must be non-negative dimensions");
        long n = ElementCount;
        Need(Packed.Length == (n + 1) / 2, $"packed weight has {Packed.Length} bytes; shape [{string.Join(", ", Shape!)}] needs {(n + 1) / 2}");
        Need(QuantMap.Length == 16, $"quant_map has {QuantMap.Length} values; expected 16");
        int blocks = Blocks;
        if (Nested)
        {
            Need(Absmax is null, "has both nested (QAbsmax) and plain (Absmax) absmax");
            Need(QAbsmax!.Length == blocks, $"absmax has {QAbsmax.Length} codes; {n} elements in blocks of {BlockSize} need {blocks}");
            Need(NestedBlockSize == Nf4Codec.NestedBlockSize, $"nested_blocksize {NestedBlockSize}; expected {Nf4Codec.NestedBlockSize}");
            int nested = (int)Nf4Codec.Blocks(blocks, NestedBlockSize);
            Need(NestedAbsmax is not null && NestedAbsmax.Length == nested,
                $"nested_absmax has {NestedAbsmax?.Length ?? 0} values; {blocks} blocks need {nested}");
            Need(NestedQuantMap is not null && NestedQuantMap.Length == 256,
                $"nested_quant_map has {NestedQuantMap?.Length ?? 0} values; expected 256");
        }
        else
        {
            Need(Absmax is not null && Absmax.Length == blocks,
                $"absmax has {Absmax?.Length ?? 0} values; {n} elements in blocks of {BlockSize} need {blocks}");
            Need(NestedAbsmax is null && NestedQuantMap is null && NestedBlockSize == 0 && NestedOffset == 0,
                "nested fields set without nested (uint8) absmax");
        }
    }
}

/// <summary>bitsandbytes' quantization_config from a config.json (BitsAndBytesConfig fields used by loading).</summary>
public sealed record BnbQuantizationConfig(bool LoadIn4Bit, bool LoadIn8Bit, string QuantType, bool DoubleQuant,
    string ComputeDType, string QuantStorage, IReadOnlyList<string>? SkipModules)
{
    /// <summary>
    /// The quantization_config of <paramref name="configJson"/> (a config.json path), or null when it has none. Any other
    /// quant_method throws NotSupportedException; missing keys take BitsAndBytesConfig's defaults (fp4, no double quant,
    /// float32 compute, uint8 storage).
    /// </summary>
    public static BnbQuantizationConfig? Read(string configJson)
    {
        var obj = StrictJson.ParseObject(File.ReadAllBytes(configJson), configJson);
        if (!obj.TryGetPropertyValue("quantization_config", out var node) || node is null) return null;
        if (node is not JsonObject q) throw new InvalidDataException($"{configJson}: quantization_config must be an object");
        try
        {
            string method = q["quant_method"]?.GetValue<string>() ?? "bitsandbytes";
            if (method != "bitsandbytes")
                throw new NotSupportedException($"{configJson}: quant_method '{method}' is not supported (only bitsandbytes 4-bit)");
            bool Flag(string key) => q[key]?.GetValue<bool>() ?? q["_" + key]?.GetValue<bool>() ?? false;
            var skip = q["llm_int8_skip_modules"] is JsonArray a
                ? a.Select(s => s?.GetValue<string>() ?? throw new InvalidDataException($"{configJson}: quantization_config.llm_int8_skip_modules holds null; expected module names")).ToList()
                : null;
            return new BnbQuantizationConfig(Flag("load_in_4bit"), Flag("load_in_8bit"),
                q["bnb_4bit_quant_type"]?.GetValue<string>() ?? "fp4", q["bnb_4bit_use_double_quant"]?.GetValue<bool>() ?? false,
                q["bnb_4bit_compute_dtype"]?.GetValue<string>() ?? "float32", q["bnb_4bit_quant_storage"]?.GetValue<string>() ?? "uint8",
                skip);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{configJson}: quantization_config has a value of the wrong type: {e.Message}", e);
        }
    }
}

/// <summary>Which tensors of a checkpoint are bnb 4-bit Linear weights (with their companions) and which are plain.</summary>
/// <param name="QuantizedWeights">Weight keys (e.g. "model.layers.0.mlp.up_proj.weight") to read with Bnb4Bit.Read.</param>
/// <param name="PlainTensors">Every other tensor (norms, embeddings, biases, lm_head), in the checkpoint's order.</param>
public sealed record Bnb4BitLayout(BnbQuantizationConfig? Config, IReadOnlyList<string> QuantizedWeights,
    IReadOnlyList<string> PlainTensors);

public static class Bnb4Bit
{
    public const string QuantStatePrefix = "quant_state.bitsandbytes__";

    private static readonly string[] Companions =
        ["absmax", "quant_map", "nested_absmax", "nested_quant_map", QuantStatePrefix + "nf4", QuantStatePrefix + "fp4"];

    private static readonly HashSet<string> JsonKeys =
        ["quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"];

    /// <summary>True when <paramref name="weightKey"/> has a bnb quant_state ("&lt;key&gt;.quant_state.bitsandbytes__nf4|fp4").</summary>
    public static bool IsQuantized(IWeightSource weights, string weightKey) =>
        weights.Contains(weightKey + "." + QuantStatePrefix + "nf4") || weights.Contains(weightKey + "." + QuantStatePrefix + "fp4");

    /// <summary>
    /// Reads and validates one quantized weight and every companion tensor (dtypes, shapes and sizes against the quant_state
    /// JSON). Errors are InvalidDataException naming the file, the tensor key and what was expected.
    /// </summary>
    public static Bnb4BitWeight Read(IWeightSource weights, string weightKey)
    {
        string Where(string key) => $"{weights.Path}: tensor '{key}'";
        string nf4 = weightKey + "." + QuantStatePrefix + "nf4", fp4 = weightKey + "." + QuantStatePrefix + "fp4";
        bool hasNf4 = weights.Contains(nf4), hasFp4 = weights.Contains(fp4);
        if (hasNf4 && hasFp4) throw new InvalidDataException($"{weights.Path}: '{weightKey}' has both {nf4} and {fp4}");
        if (!hasNf4 && !hasFp4)
            throw new InvalidDataException($"{weights.Path}: '{weightKey}' is not a bnb 4-bit weight: no '{nf4}' or '{fp4}'");
        string qsKey = hasNf4 ? nf4 : fp4;

        Need(weights, qsKey, "U8", null);
        var qs = ParseQuantState(weights.ReadBytes(qsKey), Where(qsKey), hasNf4 ? "nf4" : "fp4");
        bool nested = qs.NestedBlockSize != 0;
        long n = qs.Shape.Aggregate(1L, (a, d) => a * d);
        int blocks = (int)Nf4Codec.Blocks(n, qs.BlockSize);

        if (!weights.Contains(weightKey)) throw new InvalidDataException($"{weights.Path}: missing tensor '{weightKey}' (the packed weight)");
        if (weights.DTypeOf(weightKey) != "U8")
            throw new InvalidDataException($"{Where(weightKey)}: dtype {weights.DTypeOf(weightKey)}; expected U8 "
                + "(bnb_4bit_quant_storage other than uint8 is not supported)");
        Need(weights, weightKey, "U8", [(n + 1) / 2, 1]);
        string absmaxKey = weightKey + ".absmax", mapKey = weightKey + ".quant_map";
        Need(weights, absmaxKey, nested ? "U8" : "F32", [blocks]);
        Need(weights, mapKey, "F32", [16]);
        byte[]? qabsmax = null;
        float[]? absmax = null, nestedAbsmax = null, nestedMap = null;
        if (nested)
        {
            qabsmax = weights.ReadBytes(absmaxKey);
            string nestedKey = weightKey + ".nested_absmax", nestedMapKey = weightKey + ".nested_quant_map";
            Need(weights, nestedKey, "F32", [Nf4Codec.Blocks(blocks, qs.NestedBlockSize)]);
            Need(weights, nestedMapKey, "F32", [256]);
            nestedAbsmax = weights.ReadFloat32(nestedKey);
            nestedMap = weights.ReadFloat32(nestedMapKey);
        }
        else
        {
            absmax = weights.ReadFloat32(absmaxKey);
            foreach (var k in new[] { weightKey + ".nested_absmax", weightKey + ".nested_quant_map" })
                if (weights.Contains(k))
                    throw new InvalidDataException($"{Where(k)}: present, but {qsKey} has no nested_* entries (not double-quantized)");
        }
        var w = new Bnb4BitWeight(qs.QuantType, qs.BlockSize, qs.DType, qs.Shape, weights.ReadBytes(weightKey), qabsmax, absmax,
            weights.ReadFloat32(mapKey), nestedAbsmax, nestedMap, qs.NestedBlockSize, qs.NestedOffset);
        w.Validate($"{weights.Path}: '{weightKey}'");
        return w;
    }

    /// <summary>The dense shape of a quantized weight, from its quant_state JSON alone (no packed bytes read).</summary>
    public static int[] Shape(IWeightSource weights, string weightKey)
    {
        string nf4 = weightKey + "." + QuantStatePrefix + "nf4", fp4 = weightKey + "." + QuantStatePrefix + "fp4";
        string qsKey = weights.Contains(nf4) ? nf4 : weights.Contains(fp4) ? fp4
            : throw new InvalidDataException($"{weights.Path}: '{weightKey}' is not a bnb 4-bit weight: no '{nf4}' or '{fp4}'");
        Need(weights, qsKey, "U8", null);
        return ParseQuantState(weights.ReadBytes(qsKey), $"{weights.Path}: tensor '{qsKey}'", qsKey == nf4 ? "nf4" : "fp4").Shape;
    }

    /// <summary>
    /// The tensors bnb saves for <paramref name="weightKey"/>, with bnb's dtypes and shapes, ready for SafetensorsWriter
    /// (which orders them itself); the quant_state JSON is byte-identical to bnb's json.dumps.
    /// </summary>
    public static IReadOnlyList<TensorToWrite> Tensors(string weightKey, Bnb4BitWeight w)
    {
        w.Validate($"'{weightKey}'");
        var list = new List<TensorToWrite>
        {
            new(weightKey, DType.U8, [(w.ElementCount + 1) / 2, 1], w.Packed),
            w.Nested
                ? new(weightKey + ".absmax", DType.U8, [w.Blocks], w.QAbsmax)
                : SafetensorsWriter.F32(weightKey + ".absmax", w.Absmax!, w.Blocks),
            SafetensorsWriter.F32(weightKey + ".quant_map", w.QuantMap, 16),
        };
        if (w.Nested)
        {
            list.Add(SafetensorsWriter.F32(weightKey + ".nested_absmax", w.NestedAbsmax!, w.NestedAbsmax!.Length));
            list.Add(SafetensorsWriter.F32(weightKey + ".nested_quant_map", w.NestedQuantMap!, 256));
        }
        var json = Encoding.UTF8.GetBytes(QuantStateJson(w));
        list.Add(new(weightKey + "." + QuantStatePrefix + w.QuantType, DType.U8, [json.Length], json));
        return list;
    }

    /// <summary>The quant_state dict as bnb's json.dumps writes it: keys in QuantState.as_dict order, ", " and ": "
    /// separators, nested_offset as Python's repr of the fp32 value widened to double.</summary>
    public static string QuantStateJson(Bnb4BitWeight w)
    {
        var sb = new StringBuilder();
        sb.Append("{\"quant_type\": \"").Append(w.QuantType).Append("\", \"blocksize\": ")
            .Append(w.BlockSize.ToString(CultureInfo.InvariantCulture)).Append(", \"dtype\": \"").Append(w.DType)
            .Append("\", \"shape\": [").AppendJoin(", ", w.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture))).Append(']');
        if (w.Nested)
            sb.Append(", \"nested_blocksize\": ").Append(w.NestedBlockSize.ToString(CultureInfo.InvariantCulture))
                .Append(", \"nested_dtype\": \"float32\", \"nested_offset\": ").Append(PythonFloat(w.NestedOffset));
        return sb.Append('}').ToString();
    }

    /// <summary>
    /// Quantizes a float weight (row-major, values as stored in <paramref name="dtype"/>) as bnb's CUDA quantize_4bit does,
    /// with bnb's quant_map (FP4's pattern 0b1000 is +0.0 there) and, for double quant, the dynamic map. The nested offset
    /// is the mean summed in double; torch's float32 mean can differ in the last bit.
    /// </summary>
    public static Bnb4BitWeight Quantize(ReadOnlySpan<float> weight, int[] shape, string quantType = "nf4", bool doubleQuant = true,
        string dtype = "bfloat16", int blockSize = Nf4Codec.BlockSize)
    {
        long n = shape.Aggregate(1L, (a, d) => a * d);
        if (weight.Length != n)
            throw new ArgumentException($"{weight.Length} values for shape [{string.Join(", ", shape)}] ({n} elements)", nameof(weight));
        if (quantType is not ("nf4" or "fp4")) throw new ArgumentException($"quant type '{quantType}' is not nf4 or fp4", nameof(quantType));
        var type = quantType == "nf4" ? Numerics.QuantType.Nf4 : Numerics.QuantType.Fp4;
        var packed = new byte[(n + 1) / 2];
        var absmax = new float[Nf4Codec.Blocks(n, blockSize)];
        Nf4Codec.QuantizeCpu(weight, blockSize, type, packed, absmax);
        var map = Nf4Codec.Code(type);
        map[8] = Math.Abs(map[8]); // bnb's Python table: +0.0 (CUDA's LUT gives -0.0)
        if (!doubleQuant)
            return new Bnb4BitWeight(quantType, blockSize, dtype, (int[])shape.Clone(), packed, null, absmax, map, null, null, 0, 0f);
        var dyn = Nf4Codec.DynamicMap();
        var qabsmax = new byte[absmax.Length];
        var absmax2 = new float[Nf4Codec.Blocks(absmax.Length, Nf4Codec.NestedBlockSize)];
        float offset = Nf4Codec.DoubleQuantizeCpu(absmax, dyn, qabsmax, absmax2);
        return new Bnb4BitWeight(quantType, blockSize, dtype, (int[])shape.Clone(), packed, qabsmax, null, map, absmax2, dyn,
            Nf4Codec.NestedBlockSize, offset);
    }

    /// <summary>
    /// config.json's "quantization_config" as transformers writes BitsAndBytesConfig(load_in_4bit=True, ...).to_dict()
    /// (keys sorted; llm_int8_threshold stays 6.0, which transformers requires to be a float).
    /// </summary>
    public static JsonObject QuantizationConfig(string quantType = "nf4", bool doubleQuant = true, string computeDType = "bfloat16",
        IReadOnlyList<string>? skipModules = null)
    {
        if (quantType is not ("nf4" or "fp4")) throw new ArgumentException($"quant type '{quantType}' is not nf4 or fp4", nameof(quantType));
        if (computeDType is not ("bfloat16" or "float16" or "float32"))
            throw new ArgumentException($"compute dtype '{computeDType}' is not bfloat16, float16 or float32", nameof(computeDType));
        string skip = skipModules is null ? "null" : new JsonArray(skipModules.Select(s => (JsonNode?)s).ToArray()).ToJsonString();
        string b(bool v) => v ? "true" : "false";
        // Parsed from text so that 6.0 keeps its decimal point when written back.
        return JsonNode.Parse($$"""
            {"_load_in_4bit": true, "_load_in_8bit": false, "bnb_4bit_compute_dtype": "{{computeDType}}",
             "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "{{quantType}}", "bnb_4bit_use_double_quant": {{b(doubleQuant)}},
             "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false, "llm_int8_skip_modules": {{skip}},
             "llm_int8_threshold": 6.0, "load_in_4bit": true, "load_in_8bit": false, "quant_method": "bitsandbytes"}
            """)!.AsObject();
    }

    /// <summary>
    /// Splits a checkpoint into bnb 4-bit weights and plain tensors. <paramref name="configJson"/> defaults to config.json
    /// beside the weights (absent: no config). A load_in_8bit config or a companion tensor (".absmax", ".quant_map", ...)
    /// without its weight's quant_state throws (NotSupportedException / InvalidDataException).
    /// </summary>
    public static Bnb4BitLayout Layout(IWeightSource weights, string? configJson = null)
    {
        configJson ??= System.IO.Path.Combine(System.IO.Path.GetDirectoryName(weights.Path)!, "config.json");
        var config = File.Exists(configJson) ? BnbQuantizationConfig.Read(configJson) : null;
        if (config is { LoadIn8Bit: true })
            throw new NotSupportedException($"{configJson}: bitsandbytes 8-bit (load_in_8bit) checkpoints are not supported");
        var quantized = weights.Names.Where(k => IsQuantized(weights, k)).ToList();
        var companions = new HashSet<string>(quantized.SelectMany(k => Companions.Select(c => k + "." + c)), StringComparer.Ordinal);
        var plain = new List<string>();
        var quantizedSet = quantized.ToHashSet(StringComparer.Ordinal);
        foreach (var name in weights.Names)
        {
            if (quantizedSet.Contains(name) || companions.Contains(name)) continue;
            foreach (var c in Companions)
            {
                if (name.EndsWith("." + c, StringComparison.Ordinal) && name.Length > c.Length + 1
                    && (c.StartsWith(QuantStatePrefix, StringComparison.Ordinal) || weights.Contains(name[..^(c.Length + 1)])))
                    throw new InvalidDataException(c.StartsWith(QuantStatePrefix, StringComparison.Ordinal)
                        ? $"{weights.Path}: tensor '{name}' has no packed weight '{name[..^(c.Length + 1)]}'"
                        : $"{weights.Path}: tensor '{name}' belongs to a bnb 4-bit weight, but '{name[..^(c.Length + 1)]}' has no "
                          + $"{QuantStatePrefix}nf4|fp4");
            }
            plain.Add(name);
        }
        if (config is { LoadIn4Bit: true } && quantized.Count == 0)
            throw new InvalidDataException($"{configJson} says load_in_4bit but {weights.Path} has no bnb 4-bit weights");
        return new Bnb4BitLayout(config, quantized, plain);
    }

    // ---- internals ----

    private sealed record QuantStateJsonValues(string QuantType, int BlockSize, string DType, int[] Shape, int NestedBlockSize,
        float NestedOffset);

    private static void Need(IWeightSource w, string key, string dtype, long[]? shape)
    {
        if (!w.Contains(key)) throw new InvalidDataException($"{w.Path}: missing tensor '{key}'");
        string actual = w.DTypeOf(key);
        var s = w.Shape(key);
        if (actual != dtype)
            throw new InvalidDataException($"{w.Path}: tensor '{key}': dtype {actual}; expected {dtype}");
        if (shape is null ? s.Length != 1 : !s.SequenceEqual(shape))
            throw new InvalidDataException($"{w.Path}: tensor '{key}': shape [{string.Join(", ", s)}]; expected "
                + (shape is null ? "one dimension" : $"[{string.Join(", ", shape)}]"));
    }

    private static QuantStateJsonValues ParseQuantState(byte[] bytes, string where, string suffixType)
    {
        var obj = StrictJson.ParseObject(bytes, $"{where}: quant_state");
        try
        {
            foreach (var (k, _) in obj)
                if (!JsonKeys.Contains(k)) throw new InvalidDataException($"{where}: unknown quant_state key '{k}'");
            T Get<T>(string key) => obj[key] is JsonNode v ? v.GetValue<T>() : throw new InvalidDataException($"{where}: quant_state has no '{key}'");
            string type = Get<string>("quant_type");
            if (type != suffixType)
                throw new InvalidDataException($"{where}: quant_type '{type}' does not match the key's bitsandbytes__{suffixType}");
            var shape = obj["shape"] is JsonArray a
                ? a.Select(d => d?.GetValue<int>() ?? throw new InvalidDataException($"{where}: quant_state 'shape' holds null; expected a list of ints")).ToArray()
                : throw new InvalidDataException($"{where}: quant_state 'shape' must be a list of ints");
            bool nested = obj.ContainsKey("nested_offset") || obj.ContainsKey("nested_blocksize") || obj.ContainsKey("nested_dtype");
            int nestedBlock = 0;
            float offset = 0f;
            if (nested)
            {
                nestedBlock = Get<int>("nested_blocksize");
                if (Get<string>("nested_dtype") != "float32")
                    throw new InvalidDataException($"{where}: nested_dtype '{obj["nested_dtype"]}'; expected float32");
                if (nestedBlock != Nf4Codec.NestedBlockSize)
                    throw new InvalidDataException($"{where}: nested_blocksize {nestedBlock}; expected {Nf4Codec.NestedBlockSize}");
                offset = (float)Get<double>("nested_offset");
            }
            var v = new QuantStateJsonValues(type, Get<int>("blocksize"), Get<string>("dtype"), shape, nestedBlock, offset);
            // Field ranges (blocksize, dtype, shape) are checked here so the error names the quant_state tensor.
            if (v.BlockSize is < 32 or > 4096 || (v.BlockSize & (v.BlockSize - 1)) != 0)
                throw new InvalidDataException($"{where}: blocksize {v.BlockSize} is not a power of two in 32..4096");
            if (v.DType is not ("bfloat16" or "float16" or "float32"))
                throw new InvalidDataException($"{where}: dtype '{v.DType}'; expected bfloat16, float16 or float32");
            if (shape.Any(d => d < 0)) throw new InvalidDataException($"{where}: negative dimension in shape [{string.Join(", ", shape)}]");
            return v;
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{where}: quant_state has a value of the wrong type: {e.Message}", e);
        }
    }

    // Python's repr(float(x)) (what json.dumps writes): shortest round-trip digits, fixed notation for decimal exponents
    // -4 < e <= 16 (with ".0" on integers), else d.ddde±XX.
    internal static string PythonFloat(double x)
    {
        if (double.IsNaN(x)) return "NaN";
        if (double.IsInfinity(x)) return x > 0 ? "Infinity" : "-Infinity";
        string r = x.ToString("R", CultureInfo.InvariantCulture);
        string sign = r.StartsWith('-') ? "-" : "";
        r = r.TrimStart('-');
        int e = r.IndexOf('E');
        int exp = e < 0 ? 0 : int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        string mantissa = e < 0 ? r : r[..e];
        int dot = mantissa.IndexOf('.');
        string digits = mantissa.Replace(".", "");
        int decpt = (dot < 0 ? mantissa.Length : dot) + exp; // value = 0.digits * 10^decpt
        int lead = digits.Length - digits.TrimStart('0').Length;
        digits = digits[lead..].TrimEnd('0');
        decpt -= lead;
        if (digits.Length == 0) return sign + "0.0";
        if (decpt is > -4 and <= 16)
        {
            if (decpt <= 0) return sign + "0." + new string('0', -decpt) + digits;
            if (decpt >= digits.Length) return sign + digits + new string('0', decpt - digits.Length) + ".0";
            return sign + digits[..decpt] + "." + digits[decpt..];
        }
        string m = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
        int pe = decpt - 1;
        return sign + m + "e" + (pe < 0 ? "-" : "+") + Math.Abs(pe).ToString("00", CultureInfo.InvariantCulture);
    }
}
