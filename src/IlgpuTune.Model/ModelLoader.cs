using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public static class ModelLoader
{
    /// <summary>Loads config.json + weights from an HF model folder: model.safetensors (or its index) as transformers
    /// prefers, else pytorch_model.bin (or its index). Weights are float32, except that the decoder layers' linear weights
    /// (and the embedding and head) are stored as <paramref name="linearDtype"/> (BF16/F16: a frozen base for 16-bit tensor-core matmuls, half the memory),
    /// or quantized to 4 bits on load with <paramref name="quantization"/> (QLoRA; see CausalLM.FromWeights). A folder saved
    /// by transformers from a bitsandbytes 4-bit model (config.json quantization_config, formats.md §5.6) loads its stored
    /// NF4/FP4 weights as they are, whatever <paramref name="quantization"/> says.</summary>
    public static CausalLM Load(string directory, Device device, DType linearDtype = DType.F32, QuantType? quantization = null)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder {directory} does not exist");
        var config = ModelConfig.Load(directory);
        using var weights = WeightSource.Open(directory);
        var layout = Bnb4Bit.Layout(weights, Path.Combine(directory, "config.json"));
        if (layout.QuantizedWeights.Count == 0)
            return CausalLM.FromWeights(config, device, weights.Names,
                name => weights.Contains(name) ? weights.Shape(name) : null,
                weights.ReadFloat32, directory, linearDtype, quantization);

        var stored = layout.QuantizedWeights.ToHashSet(StringComparer.Ordinal);
        return CausalLM.FromWeights(config, device, layout.PlainTensors.Concat(layout.QuantizedWeights),
            name => stored.Contains(name) ? Bnb4Bit.Shape(weights, name).Select(d => (long)d).ToArray()
                : weights.Contains(name) ? weights.Shape(name) : null,
            weights.ReadFloat32, directory, linearDtype, quantization,
            name => stored.Contains(name) ? FromBnb(device, name, Bnb4Bit.Read(weights, name)) : null);
    }

    private static Nf4Weight FromBnb(Device device, string name, Bnb4BitWeight w) =>
        Nf4Weight.FromQuantized(device, w.Shape, w.BlockSize, w.Type, w.Packed, w.QuantMap, w.Absmax, w.QAbsmax, w.NestedAbsmax,
            w.NestedQuantMap, w.NestedOffset, name);
}
