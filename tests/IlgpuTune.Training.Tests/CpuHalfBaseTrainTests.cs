using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Training.Tests;

/// <summary>LoRA on the CPU over a bf16 checkpoint: the base stays bf16 (mapped, widened inside the products) and trains.</summary>
public class CpuHalfBaseTrainTests
{
    [Fact]
    public void TinyLora_OnABf16Base_KeepsItBf16_AndTheLossFalls()
    {
        using var tmp = new TempDir();
        string tiny = Builtins.LoadConfig(Builtins.DefaultConfig, ["device=cpu"]).PretrainedModelNameOrPath;
        string dir = Directory.CreateDirectory(Path.Combine(tmp.Path, "bf16")).FullName;
        foreach (var f in Directory.GetFiles(tiny).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        using (var src = IO.SafetensorsModel.Open(Path.Combine(tiny, "model.safetensors")))
            IO.SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), src.Names.Select(n =>
                new IO.TensorToWrite(n, DType.BF16, src.Shape(n), IO.SafetensorsWriter.Encode(src.ReadFloat32(n), DType.BF16))).ToList());
        var lines = new List<string>();
        var cfg = Builtins.LoadConfig(Builtins.DefaultConfig,
            ["max_iters=12", "logging_steps=1", "evaluation_freq=1000", "evaluation_max_new_tokens=4", "device=cpu",
                $"pretrained_model_name_or_path={dir}"]);
        var result = Trainer.Run(cfg, new TrainOptions { WorkDir = Path.Combine(tmp.Path, "work"), Console = lines.Add });
        Assert.Contains(lines, l => l.Contains("frozen base:", StringComparison.Ordinal) && l.Contains("kept in BF16", StringComparison.Ordinal));
        Assert.Equal(12, result.Log.Count);
        Assert.True(result.Log[^1].Loss < result.Log[0].Loss - 0.5, $"loss should fall: {result.Log[0].Loss} -> {result.Log[^1].Loss}");
        Assert.NotNull(result.AdapterDir);
    }
}
