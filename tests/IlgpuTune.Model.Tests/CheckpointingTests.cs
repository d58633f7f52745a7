using IlgpuTune.Core;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

public class CheckpointingTests
{
    // Full fine-tuning and LoRA (with dropout, which must be re-drawn identically on recompute).
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Checkpointed_GradientsEqualPlain_WithLessActivationMemory(bool lora)
    {
        using var device = Device.Create("cpu");
        var (plainGrads, plainLoss, plainPeak) = Run(device, lora, checkpointing: false);
        var (ckptGrads, ckptLoss, ckptPeak) = Run(device, lora, checkpointing: true);
        Assert.Equal(plainLoss, ckptLoss);
        Assert.Equal(plainGrads.Keys.Order(), ckptGrads.Keys.Order());
        foreach (var (name, g) in plainGrads) Close.Assert(name, g, ckptGrads[name], 1e-7, 1e-5);
        Assert.True(ckptPeak < plainPeak, $"peak with checkpointing {ckptPeak} B, without {plainPeak} B");
    }

    private static (Dictionary<string, float[]> Grads, float Loss, long Peak) Run(Device device, bool lora, bool checkpointing)
    {
        using var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), device);
        if (lora) model.ApplyLora(new LoraConfig(4, 8, 0.1f, ["q_proj", "v_proj", "down_proj"]), seed: 3);
        else model.SetFullFineTuning();
        model.GradientCheckpointing = checkpointing;
        var ids = Enumerable.Range(0, 64).Select(i => (i * 37 + 11) % 128).ToArray();
        device.Allocator.ResetPeak();
        long before = device.Allocator.AllocatedBytes;
        float loss;
        using (var tape = new Tape())
        {
            var (logits, l) = model.ForwardWithLoss(ids, ids, 2, 32, rng: new Random(5));
            using (logits)
            using (l)
            {
                loss = l.Item();
                tape.Backward(l);
            }
        }
        long peak = device.Allocator.PeakAllocatedBytes - before;
        var grads = model.TrainableParameters.ToDictionary(p => p.Name!, p => p.Grad!.ToFloatArray());
        return (grads, loss, peak);
    }
}
