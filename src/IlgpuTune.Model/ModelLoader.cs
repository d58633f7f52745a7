using IlgpuTune.Core;
using IlgpuTune.IO;

namespace IlgpuTune.Model;

public static class ModelLoader
{
    /// <summary>Loads config.json + safetensors weights (single file or sharded) from an HF model folder, as float32.</summary>
    public static CausalLM Load(string directory, Device device)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder {directory} does not exist");
        var config = ModelConfig.Load(directory);
        using var weights = SafetensorsModel.Open(directory);
        return CausalLM.FromWeights(config, device, weights.Names,
            name => weights.Contains(name) ? weights.Get(name).Shape : null,
            weights.ReadFloat32, directory);
    }
}
