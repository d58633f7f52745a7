// `convert quantize`: an HF model folder -> the same model as transformers saves a bitsandbytes 4-bit model
// (formats.md §5.6): every decoder linear weight becomes <key> (packed U8), <key>.absmax, <key>.quant_map,
// <key>.nested_absmax, <key>.nested_quant_map and <key>.quant_state.bitsandbytes__nf4|fp4; embeddings, norms, biases and
// the head keep their stored dtype; config.json gets quantization_config. Loads with ModelLoader (and with transformers
// when bitsandbytes is installed). Streams: the safetensors header needs every quant_state's JSON length up front, so a
// first pass quantizes each linear and keeps only its small parts; the second re-quantizes it while writing its bytes.
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public static class QuantizedExport
{
    /// <summary>Writes <paramref name="outDir"/> atomically; returns the weight files written.</summary>
    public static IReadOnlyList<string> Run(string baseDir, string outDir, long maxShardBytes, string quantType = "nf4", bool doubleQuant = true)
    {
        if (quantType is not ("nf4" or "fp4")) throw new ArgumentException($"quant type '{quantType}': expected nf4 or fp4");
        string target = Path.GetFullPath(outDir);
        if (HfFiles.IsSameOrInside(baseDir, target))
            throw new ArgumentException($"output folder {target} would replace the input {Path.GetFullPath(baseDir)}", nameof(outDir));
        var model = ModelConfig.Load(baseDir);
        var config = HfFiles.ReadConfigJson(baseDir);
        if (config["quantization_config"] is not null)
            throw new InvalidDataException($"{Path.Combine(baseDir, "config.json")}: the model is already quantized (quantization_config)");
        using var weights = WeightSource.Open(baseDir);
        var expected = CausalLM.ExpectedWeights(model);
        // Every tensor the config implies must be there with its shape before anything is written: a config.json that
        // disagrees with its weights (hidden_size, vocab_size...) fails here, with no output folder.
        foreach (var (name, shape) in expected)
        {
            if (!weights.Contains(name)) throw new InvalidDataException($"{weights.Path}: missing tensor '{name}' (config.json implies it)");
            var actual = weights.Shape(name);
            if (!actual.SequenceEqual(shape.Select(d => (long)d)))
                throw new InvalidDataException($"{weights.Path}: tensor '{name}' has shape [{string.Join(", ", actual)}], " +
                    $"but config.json implies [{string.Join(", ", shape)}]");
        }
        var linear = expected
            .Where(e => CausalLM.IsDecoderLinear(model, e.Name, e.Shape)).Select(e => e.Name).ToHashSet(StringComparer.Ordinal);

        // Pass 1: each linear's quantization without its packed bytes (kept: JSON, absmax parts, maps).
        var small = new Dictionary<string, ReadOnlyMemory<byte>>(StringComparer.Ordinal);
        var specs = new List<TensorSpec>();
        foreach (var name in weights.Names)
        {
            string stored = weights.DTypeOf(name);
            var shape = weights.Shape(name);
            if (!linear.Contains(name))
            {
                specs.Add(new TensorSpec(name, DTypeInfo.FromSafetensorsName(stored)
                    ?? throw new InvalidDataException($"{weights.Path}: tensor '{name}' has dtype {stored}, which cannot be copied"), shape));
                continue;
            }
            foreach (var t in Bnb4Bit.Tensors(name, Quantize(weights, name, quantType, doubleQuant)))
            {
                specs.Add(new TensorSpec(t.Name, t.DType, t.Shape));
                if (t.Name != name) small[t.Name] = t.Data;
            }
        }

        IReadOnlyList<string>? files = null;
        AtomicDirectory.Write(target, tmp =>
        {
            files = SafetensorsWriter.WriteShardedStreaming(tmp, "model", specs, maxShardBytes, spec =>
            {
                if (small.Remove(spec.Name, out var part)) return part;
                // Only a packed weight needs the second quantization; its other parts were kept from pass 1.
                return linear.Contains(spec.Name) ? Quantize(weights, spec.Name, quantType, doubleQuant).Packed : weights.ReadBytes(spec.Name);
            });
            config["quantization_config"] = Bnb4Bit.QuantizationConfig(quantType, doubleQuant, HfFiles.TorchName(model.TorchDtype ?? DType.BF16));
            AtomicFile.WriteAllText(Path.Combine(tmp, "config.json"), config.ToJsonString(new() { WriteIndented = true }) + "\n");
            HfFiles.CopyAuxiliary(baseDir, tmp);
        });
        return files!;
    }

    private static Bnb4BitWeight Quantize(IWeightSource weights, string name, string quantType, bool doubleQuant)
    {
        string dtype = weights.DTypeOf(name) switch { "BF16" => "bfloat16", "F16" => "float16", _ => "float32" };
        var shape = weights.Shape(name).Select(d => (int)d).ToArray();
        return Bnb4Bit.Quantize(weights.ReadFloat32(name), shape, quantType, doubleQuant, dtype);
    }
}
