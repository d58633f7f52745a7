using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>`quantization: nf4` end to end on the CPU: the built-in tiny QLoRA config trains, and its adapter is a plain
/// PEFT adapter of the dense base.</summary>
public class QLoraTrainTests
{
    [Fact]
    public void TinyQLora_LossFalls_AndTheAdapterLoadsOntoTheDenseBase()
    {
        using var work = new TempDir();
        var lines = new List<string>();
        var cfg = Builtins.LoadConfig("tiny_llama_qlora_colorist_e3",
            ["max_iters=12", "logging_steps=1", "evaluation_freq=1000", "evaluation_max_new_tokens=4", "device=cpu"]);
        Assert.Equal("nf4", cfg.Quantization);
        var result = Trainer.Run(cfg, new TrainOptions { WorkDir = work.Path, Console = lines.Add });
        Assert.Contains(lines, l => l.Contains("quantized 14 linear weights to NF4", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("Sample output (after training)", StringComparison.Ordinal)); // generation on the 4-bit base
        Assert.Equal(12, result.Log.Count);
        Assert.True(result.Log[^1].Loss < result.Log[0].Loss - 0.5, $"loss should fall: {result.Log[0].Loss} -> {result.Log[^1].Loss}");

        Assert.NotNull(result.AdapterDir);
        var config = PeftAdapter.ReadConfig(result.AdapterDir!);
        Assert.Equal(32, config.R);
        Assert.Contains(Path.GetFullPath(cfg.PretrainedModelNameOrPath).Replace("\\", "\\\\"),
            File.ReadAllText(Path.Combine(result.AdapterDir!, PeftAdapter.ConfigFile)));
        using var device = Device.Create("cpu");
        using var dense = ModelLoader.Load(cfg.PretrainedModelNameOrPath, device);
        Assert.Empty(dense.QuantizedWeights);
        Assert.Equal(14, PeftAdapter.Load(result.AdapterDir!, dense).Count);
    }
}
