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

public class FusedLossTests
{
    [Fact]
    public void Loss_EqualsForwardWithLoss_AndGivesTheSameGrads()
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Repo.Fixture("tiny/qwen2"), device); // tied head: both paths reach the embedding
        model.SetFullFineTuning();
        var ids = Enumerable.Range(0, 32).Select(i => (i * 29 + 5) % 128).ToArray();
        var labels = ids.Select((t, i) => i % 5 == 0 ? -100 : t).ToArray();
        Dictionary<string, float[]> Grads(bool fused, out float loss)
        {
            using (var tape = new Tape())
            {
                if (fused)
                {
                    using var l = model.Loss(ids, labels, 2, 16);
                    loss = l.Item();
                    tape.Backward(l);
                }
                else
                {
                    var (logits, l) = model.ForwardWithLoss(ids, labels, 2, 16);
                    using (logits)
                    using (l)
                    {
                        loss = l.Item();
                        tape.Backward(l);
                    }
                }
            }
            var g = model.TrainableParameters.ToDictionary(p => p.Name!, p => p.Grad!.ToFloatArray());
            model.ZeroGrad();
            return g;
        }
        var plain = Grads(false, out float plainLoss);
        var fused = Grads(true, out float fusedLoss);
        Assert.Equal(plainLoss, fusedLoss, 5);
        foreach (var (name, g) in plain) Close.Assert(name, g, fused[name], 1e-7, 1e-4);
    }
}
