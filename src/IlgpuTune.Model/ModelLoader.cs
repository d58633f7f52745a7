using IlgpuTune.Core;
using IlgpuTune.IO;

namespace IlgpuTune.Model;

public static class ModelLoader
{
    /// <summary>Loads config.json + weights from an HF model folder, as float32: model.safetensors (or its index) as
    /// transformers prefers, else pytorch_model.bin (or its index).</summary>
    public static CausalLM Load(string directory, Device device)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder {directory} does not exist");
        var config = ModelConfig.Load(directory);
        using var weights = WeightSource.Open(directory);
        return CausalLM.FromWeights(config, device, weights.Names,
            name => weights.Contains(name) ? weights.Shape(name) : null,
            weights.ReadFloat32, directory);
    }
}
