using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

public class CheckpointExportTests
{
    [Fact]
    public void FullFineTuningCheckpoint_ExportsAnHfFolderWithTheTrainedWeights()
    {
        using var work = new TempDir();
        using var outDir = new TempDir();
        Trainer.Run(Builtins.LoadConfig(Builtins.DefaultConfig, ["lora=null", "max_iters=3", "device=cpu", "evaluation_freq=1000"]),
            new TrainOptions { WorkDir = work.Path, Console = _ => { } });
        string ckpt = Checkpoint.List(work.Path)[^1].Dir;
        CheckpointExport.Run(ckpt, outDir.Path, DType.BF16);

        using var device = Device.Create("cpu");
        using var exported = ModelLoader.Load(outDir.Path, device);
        using var trained = SafetensorsTrainable(ckpt);
        Assert.Equal(DType.BF16, exported.Config.TorchDtype);
        foreach (var (name, p) in exported.Parameters)
        {
            var expected = trained.ReadFloat32(name).Select(v => HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(v))).ToArray();
            Assert.Equal(expected, p.ToFloatArray());
        }
        Assert.True(File.Exists(Path.Combine(outDir.Path, "tokenizer.json")));
    }

    private static IO.SafetensorsFile SafetensorsTrainable(string ckpt) => IO.SafetensorsFile.Open(Path.Combine(ckpt, "trainable.safetensors"));
}
