using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;

namespace IlgpuTune.Model;

public static class ModelLoader
{
    /// <summary>Loads config.json + weights from an HF model folder: model.safetensors (or its index) as transformers
    /// prefers, else pytorch_model.bin (or its index). Weights are float32, except that the decoder layers' linear weights
    /// are stored as <paramref name="linearDtype"/> (BF16/F16: a frozen base for 16-bit tensor-core matmuls, half the memory),
    /// or quantized to 4 bits on load with <paramref name="quantization"/> (QLoRA; see CausalLM.FromWeights).</summary>
    public static CausalLM Load(string directory, Device device, DType linearDtype = DType.F32, QuantType? quantization = null)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder {directory} does not exist");
        var config = ModelConfig.Load(directory);
        using var weights = WeightSource.Open(directory);
        return CausalLM.FromWeights(config, device, weights.Names,
            name => weights.Contains(name) ? weights.Shape(name) : null,
            weights.ReadFloat32, directory, linearDtype, quantization);
    }
}
