using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// Gradient checkpoints offloaded to page-locked host memory (CausalLM.OffloadCheckpoints) on ILGPU's CPU accelerator:
/// the same loss, gradients and updated weights as checkpoints kept on the device, one pinned buffer per layer.
/// </summary>
[Collection("ILGPU emulator")]
public class OffloadCheckpointsTests
{
    private const int Batch = 1, Seq = 16, Steps = 1;

    // QLoRA (the tiny Llama's linears in NF4) with LoRA dropout, in fp32: the emulator's bf16 kernels are slow; HostOffloadTests
    // checks bf16-stored checkpoints and longer chains.
    [Fact]
    public void Offloaded_TrainsBitwiseAsKeptOnTheDevice()
    {
        using var device = Device.Create("ilgpu-cpu");
        var kept = Train(device, qlora: true, offload: false);
        var away = Train(device, qlora: true, offload: true);

        Assert.Equal(kept.Losses, away.Losses);
        for (int s = 0; s < Steps; s++)
            foreach (var (name, g) in kept.Grads[s]) Assert.True(g.SequenceEqual(away.Grads[s][name]), $"step {s}: {name}.grad differs");
        foreach (var (name, w) in kept.Weights) Assert.True(w.SequenceEqual(away.Weights[name]), $"{name} differs after {Steps} steps");

        // One pinned buffer per layer. HostOffloadTests checks their reuse and the device memory saved between forward and
        // backward (a second step here would double the emulator's time; the first also grows the kernel workspaces).
        long input = CachingAllocator.RoundSize(Batch * Seq * away.Hidden * sizeof(float));
        Assert.All(kept.Pinned, p => Assert.Equal(0, p));
        Assert.All(away.Pinned, p => Assert.Equal(away.Layers * input, p));
    }

    [Fact]
    public void ManagedCpu_KeepsTheCheckpointsWhereTheyAre()
    {
        using var device = Device.Create("cpu");
        Assert.Null(device.Backend.HostOffload);
        var kept = Train(device, qlora: false, offload: false, steps: 1);
        var away = Train(device, qlora: false, offload: true, steps: 1);
        Assert.Equal(kept.Losses, away.Losses);
        Assert.Equal(kept.AfterForward, away.AfterForward);
    }

    private sealed record Run(List<float> Losses, List<Dictionary<string, float[]>> Grads, Dictionary<string, float[]> Weights,
        List<long> AfterForward, List<long> Pinned, int Layers, int Hidden);

    private static Run Train(Device device, bool qlora, bool offload, int steps = Steps)
    {
        using var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), device, quantization: qlora ? QuantType.Nf4 : null);
        model.ApplyLora(new LoraConfig(4, 8, 0.1f, ["q_proj", "v_proj", "down_proj"]), seed: 3);
        model.GradientCheckpointing = true;
        model.OffloadCheckpoints = offload;
        var run = new Run([], [], [], [], [], model.Layers.Length, model.Config.HiddenSize);
        for (int s = 0; s < steps; s++)
        {
            var ids = Enumerable.Range(0, Batch * Seq).Select(i => (i * 37 + 11 * s + 5) % 128).ToArray();
            using (var tape = new Tape())
            {
                var (logits, loss) = model.ForwardWithLoss(ids, ids, Batch, Seq, rng: new Random(s));
                using (logits)
                using (loss)
                {
                    run.AfterForward.Add(device.Allocator.AllocatedBytes);
                    run.Losses.Add(loss.Item());
                    tape.Backward(loss);
                }
            }
            run.Grads.Add(model.TrainableParameters.ToDictionary(p => p.Name!, p => p.Grad!.ToFloatArray()));
            foreach (var p in model.TrainableParameters)
            {
                using var step = Ops.Scale(p.Grad!, -0.5f); // plain SGD: each step's weights depend on the last step's gradients
                Ops.AccumulateInPlace(p, step);
            }
            model.ZeroGrad();
            run.Pinned.Add(device.Backend.HostOffload?.HostBytes ?? 0);
        }
        foreach (var p in model.TrainableParameters) run.Weights[p.Name!] = p.ToFloatArray();
        return run;
    }
}
