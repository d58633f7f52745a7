// `convert merge`: base model + PEFT LoRA adapter -> a plain HF model folder, as PEFT's merge_and_unload + save_pretrained:
//   W' = W + scaling · (B @ A)   for each adapted linear (A [r, in], B [out, r]; InternLM2's fused wqkv is just such a linear)
// computed in fp32 and cast once to the output dtype. Streams tensor by tensor through SafetensorsWriter.WriteShardedParallel:
// tensors are read, merged and cast on all cores ahead of the writer, and those in flight (fp32 copy, output bytes, A and B)
// stay within BudgetBytes (one tensor over it runs alone), whatever the model size; the buffers kept for reuse between
// tensors (BufferPool: fp32 copies, encoded bytes) add at most BudgetBytes each.
using System.Collections.Concurrent;
using System.Numerics;
using System.Numerics.Tensors;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

/// <summary>What a merge did: the module paths that received a LoRA delta, and the weight files written.</summary>
public sealed record MergeSummary(IReadOnlyList<string> MergedModules, IReadOnlyList<string> Files);

public static class Merge
{
    private const string AdapterPrefix = "base_model.model.";

    /// <summary>The most memory the tensors read but not yet written may hold (see the file head).</summary>
    public const long BudgetBytes = 1L << 30;

    /// <summary>
    /// Writes <paramref name="outDir"/> atomically (temp folder, then rename; an existing folder is replaced): config.json with
    /// "torch_dtype" and "dtype" set to <paramref name="dtype"/>, the merged weights as safetensors shards of at most
    /// <paramref name="maxShardBytes"/>, and the base's generation config, tokenizer files and remote-code *.py.
    /// </summary>
    public static MergeSummary Run(string baseDir, string adapterDir, string outDir, long maxShardBytes, DType dtype)
    {
        HfFiles.CheckOutputDtype(dtype);
        string target = Path.GetFullPath(outDir);
        foreach (var input in new[] { baseDir, adapterDir })
            if (HfFiles.IsSameOrInside(input, target))
                throw new ArgumentException($"output folder {target} would replace the input {Path.GetFullPath(input)}", nameof(outDir));
        var lora = PeftAdapter.ReadConfig(adapterDir);
        var config = HfFiles.ReadConfigJson(baseDir);
        using var baseWeights = WeightSource.Open(baseDir);
        using var adapter = WeightSource.Open(adapterDir, PeftAdapter.WeightsFile, "adapter_model.bin");
        MergeSummary? summary = null;
        AtomicDirectory.Write(target, tmp =>
        {
            summary = MergeWeights(baseWeights, adapter, lora, tmp, maxShardBytes, dtype);
            HfFiles.WriteConfig(config, tmp, dtype);
            HfFiles.CopyAuxiliary(baseDir, tmp);
        });
        return summary!;
    }

    /// <summary>
    /// Streams every base tensor into "model*.safetensors" in <paramref name="directory"/>, adding the adapter's delta to the
    /// adapted linears; the tensors in flight hold at most <paramref name="budgetBytes"/>. Every adapter tensor must be a lora_A/lora_B pair of a targeted base linear with matching shapes.
    /// </summary>
    public static MergeSummary MergeWeights(IWeightSource baseWeights, IWeightSource adapter, LoraConfig lora, string directory,
        long maxShardBytes, DType dtype, long budgetBytes = BudgetBytes)
    {
        HfFiles.CheckOutputDtype(dtype);
        var pairs = AdapterPairs(baseWeights, adapter, lora);
        var specs = baseWeights.Names.Select(name =>
        {
            string stored = baseWeights.DTypeOf(name);
            if (stored is not ("F32" or "F16" or "BF16" or "F64"))
                throw new InvalidDataException($"{baseWeights.Path}: tensor '{name}' has dtype {stored}; merge writes floating "
                    + "tensors only (a quantized base cannot be merged: use its bf16/fp16 original)");
            return new TensorSpec(name, dtype, baseWeights.Shape(name));
        }).ToList();
        // Memory a tensor holds from its read to its write: the fp32 copy, the encoded bytes (F32 is a view), A and B.
        long Cost(TensorSpec spec)
        {
            long n = spec.ByteLength / dtype.Size(), held = 4 * n + (dtype == DType.F32 ? 0 : spec.ByteLength);
            return pairs.ContainsKey(spec.Name) ? held + 4L * lora.R * (spec.Shape[0] + spec.Shape[1]) : held;
        }
        // Buffers reused across tensors of the same size; the encoded (or, for F32, the merged) one goes back once written.
        var floats = new BufferPool<float>(budgetBytes);
        var encoded = new BufferPool<byte>(budgetBytes);
        var held = new ConcurrentDictionary<string, Array>(StringComparer.Ordinal);
        var files = SafetensorsWriter.WriteShardedParallel(directory, "model", specs, maxShardBytes, spec =>
        {
            var w = floats.Rent(spec.ByteLength / dtype.Size());
            baseWeights.ReadFloat32(spec.Name, w);
            if (pairs.TryGetValue(spec.Name, out var p))
                AddDelta(w, adapter.ReadFloat32(p.A), adapter.ReadFloat32(p.B), (int)spec.Shape[0], (int)spec.Shape[1], lora.R, lora.Scaling);
            if (dtype == DType.F32)
            {
                held[spec.Name] = w;
                return SafetensorsWriter.Encode(w, dtype);
            }
            var bytes = encoded.Rent(spec.ByteLength);
            SafetensorsWriter.Encode(w, dtype, bytes);
            floats.Return(w);
            held[spec.Name] = bytes;
            return bytes;
        }, new WritePipeline(budgetBytes, Environment.ProcessorCount, Cost, spec =>
        {
            if (!held.TryRemove(spec.Name, out var buffer)) return;
            if (buffer is float[] f) floats.Return(f);
            else encoded.Return((byte[])buffer);
        }));
        var modules = pairs.Keys.Select(k => k[..^".weight".Length]).Order(StringComparer.Ordinal).ToList();
        return new MergeSummary(modules, files);
    }

    /// <summary>w[out, in] += scaling · (b[out, r] @ a[r, in]), the product accumulated in fp32 per row as PEFT's
    /// get_delta_weight (B @ A, then × scaling): for each element, acc = 0; acc = a[k]·b[o, k] + acc for k = 0..r-1 (a
    /// rounded product, then a rounded sum: TensorPrimitives.MultiplyAdd), then w = acc·scaling + w. Four rows share each
    /// load of a, in registers; the arithmetic per element is the same, so the bytes are.</summary>
    public static void AddDelta(float[] w, float[] a, float[] b, int outFeatures, int inFeatures, int r, float scaling)
    {
        if (w.Length != (long)outFeatures * inFeatures || a.Length != (long)r * inFeatures || b.Length != (long)outFeatures * r)
            throw new ArgumentException($"shapes do not fit: w {w.Length}, a {a.Length}, b {b.Length} for out {outFeatures}, in {inFeatures}, r {r}");
        const int rows = 4;
        int width = Vector<float>.Count, vectorEnd = inFeatures - inFeatures % width;
        Parallel.For(0, (outFeatures + rows - 1) / rows, block =>
        {
            int o = block * rows;
            if (outFeatures - o < rows)
            {
                var row = new float[inFeatures];
                for (; o < outFeatures; o++) AddDeltaRow(w, a, b, o, inFeatures, r, scaling, row);
                return;
            }
            var s = new Vector<float>(scaling);
            for (int j = 0; j < vectorEnd; j += width)
            {
                Vector<float> acc0 = Vector<float>.Zero, acc1 = Vector<float>.Zero, acc2 = Vector<float>.Zero, acc3 = Vector<float>.Zero;
                for (int k = 0; k < r; k++)
                {
                    var x = new Vector<float>(a, k * inFeatures + j);
                    acc0 = x * b[o * r + k] + acc0;
                    acc1 = x * b[(o + 1) * r + k] + acc1;
                    acc2 = x * b[(o + 2) * r + k] + acc2;
                    acc3 = x * b[(o + 3) * r + k] + acc3;
                }
                (acc0 * s + new Vector<float>(w, o * inFeatures + j)).CopyTo(w, o * inFeatures + j);
                (acc1 * s + new Vector<float>(w, (o + 1) * inFeatures + j)).CopyTo(w, (o + 1) * inFeatures + j);
                (acc2 * s + new Vector<float>(w, (o + 2) * inFeatures + j)).CopyTo(w, (o + 2) * inFeatures + j);
                (acc3 * s + new Vector<float>(w, (o + 3) * inFeatures + j)).CopyTo(w, (o + 3) * inFeatures + j);
            }
            for (int i = o; i < o + rows; i++)
            {
                for (int j = vectorEnd; j < inFeatures; j++)
                {
                    float acc = 0f;
                    for (int k = 0; k < r; k++) acc = a[k * inFeatures + j] * b[i * r + k] + acc;
                    w[i * inFeatures + j] = acc * scaling + w[i * inFeatures + j];
                }
            }
        });
    }

    // One row the plain way (the rows left over by AddDelta's blocks of four).
    private static void AddDeltaRow(float[] w, float[] a, float[] b, int o, int inFeatures, int r, float scaling, float[] row)
    {
        Array.Clear(row);
        for (int k = 0; k < r; k++)
            TensorPrimitives.MultiplyAdd(a.AsSpan(k * inFeatures, inFeatures), b[o * r + k], row, row);
        var wRow = w.AsSpan(o * inFeatures, inFeatures);
        TensorPrimitives.MultiplyAdd(row, scaling, wRow, wRow);
    }

    // base weight name -> (lora_A key, lora_B key), validated against the base shapes and the adapter config.
    internal static Dictionary<string, (string A, string B)> AdapterPairs(IWeightSource baseWeights, IWeightSource adapter, LoraConfig lora)
    {
        var modules = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var key in adapter.Names)
        {
            string? module = key.StartsWith(AdapterPrefix, StringComparison.Ordinal) switch
            {
                true when key.EndsWith(".lora_A.weight", StringComparison.Ordinal) => key[AdapterPrefix.Length..^".lora_A.weight".Length],
                true when key.EndsWith(".lora_B.weight", StringComparison.Ordinal) => key[AdapterPrefix.Length..^".lora_B.weight".Length],
                _ => null,
            };
            if (module is null)
                throw new InvalidDataException($"{adapter.Path}: tensor '{key}' is not a LoRA A/B weight; only plain LoRA on linear "
                    + "layers can be merged (no modules_to_save, embedding LoRA, DoRA or LoRA biases)");
            modules.Add(module);
        }
        if (modules.Count == 0) throw new InvalidDataException($"{adapter.Path}: the adapter holds no LoRA weights");
        var pairs = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
        foreach (var m in modules)
        {
            string aKey = AdapterPrefix + m + ".lora_A.weight", bKey = AdapterPrefix + m + ".lora_B.weight", wKey = m + ".weight";
            foreach (var k in new[] { aKey, bKey })
                if (!adapter.Contains(k)) throw new InvalidDataException($"{adapter.Path}: missing tensor '{k}'");
            if (!lora.Targets(m))
                throw new InvalidDataException($"{adapter.Path}: '{m}' has LoRA weights but is not in target_modules "
                    + $"[{string.Join(", ", lora.TargetModules)}]");
            if (!baseWeights.Contains(wKey))
                throw new InvalidDataException($"{baseWeights.Path}: the adapter targets '{m}' but the base has no tensor '{wKey}'");
            long[] w = baseWeights.Shape(wKey), a = adapter.Shape(aKey), b = adapter.Shape(bKey);
            if (w.Length != 2 || a.Length != 2 || b.Length != 2 || a[0] != lora.R || b[1] != lora.R || a[1] != w[1] || b[0] != w[0])
                throw new InvalidDataException($"'{m}': lora_A [{string.Join(", ", a)}] and lora_B [{string.Join(", ", b)}] do not "
                    + $"fit the base weight [{string.Join(", ", w)}] with r = {lora.R}");
            pairs[wKey] = (aKey, bKey);
        }
        return pairs;
    }
}

/// <summary>The non-weight files of an HF model folder, shared by Merge and HfExport.</summary>
internal static class HfFiles
{
    // formats.md §3.1: generation config, every tokenizer file transformers may read, and remote code (*.py, below).
    private static readonly string[] Auxiliary =
    [
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
        "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja",
    ];

    public static void CheckOutputDtype(DType dtype)
    {
        if (dtype is not (DType.F32 or DType.F16 or DType.BF16))
            throw new ArgumentException($"models are written as F32, F16 or BF16, not {dtype}", nameof(dtype));
    }

    public static string TorchName(DType dtype) => dtype switch
    {
        DType.F32 => "float32",
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => throw new ArgumentException($"no torch dtype name for {dtype}", nameof(dtype)),
    };

    /// <summary>Replacing <paramref name="folder"/> would delete <paramref name="path"/> (the same folder or inside it).</summary>
    public static bool IsSameOrInside(string path, string folder)
    {
        string a = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)), b = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        return a == b || a.StartsWith(b + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    public static JsonObject ReadConfigJson(string directory)
    {
        string file = Path.Combine(directory, "config.json");
        if (!File.Exists(file)) throw new FileNotFoundException($"no config.json in {directory}", file);
        return StrictJson.ParseObject(File.ReadAllBytes(file), file);
    }

    /// <summary>config.json with both dtype keys (transformers v4 reads torch_dtype, v5 dtype), 2-space indent as HF.</summary>
    public static void WriteConfig(JsonObject config, string directory, DType dtype)
    {
        var copy = (JsonObject)config.DeepClone();
        copy["torch_dtype"] = TorchName(dtype);
        copy["dtype"] = TorchName(dtype);
        var options = new System.Text.Json.JsonSerializerOptions
        {
            WriteIndented = true, NewLine = "\n", Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, "config.json"), copy.ToJsonString(options) + "\n");
    }

    public static void CopyAuxiliary(string from, string to)
    {
        var names = Auxiliary.Where(n => File.Exists(Path.Combine(from, n)))
            .Concat(Directory.GetFiles(from, "*.py").Select(p => Path.GetFileName(p)));
        foreach (var n in names) File.Copy(Path.Combine(from, n), Path.Combine(to, n), overwrite: true);
    }
}
