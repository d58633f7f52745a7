using IlgpuTune.Core;
using IlgpuTune.Distributed;
using IlgpuTune.Model;
using IlgpuTune.TestKit;
using IlgpuTune.Training.Distributed;

namespace IlgpuTune.Training.Tests;

/// <summary>
/// N ranks x batch b x accumulation a on the in-process communicator give what 1 rank x batch b x accumulation N*a gives:
/// the same window losses and final weights, for DDP, ZeRO-1 and ZeRO-2, LoRA and full fine-tuning. Both sides run fp32 on
/// the managed CPU device; they differ only in the order gradients are summed (per rank, then across ranks), so weights
/// agree to 5e-4 of the largest update (AdamW divides by sqrt(v), so the rounding of near-zero gradients shows: measured up to 1.3e-4 for full fine-tuning, under 2e-5 for LoRA; a wrong gradient shows in the norms, held to 1e-4) and losses to 1e-5.
/// </summary>
public class DistributedStepTests
{
    private const int World = 2, Accum = 2, Batch = 2, Seq = 12, Windows = 3;
    private const float MaxNorm = 1f;

    private static string ModelDir => Repo.Fixture("tiny/llama");

    // Micro-batch m of the whole job: Batch rows of Seq tokens; some labels ignored so rows weigh differently.
    private static (int[] Ids, int[] Labels) MicroBatch(int m)
    {
        var rng = new Random(1000 + m);
        var ids = new int[Batch * Seq];
        var labels = new int[Batch * Seq];
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = rng.Next(3, 128);
            labels[i] = rng.Next(4) == 0 ? -100 : ids[i];
        }
        return (ids, labels);
    }

    private static CausalLM Load(Device device, bool lora)
    {
        var model = ModelLoader.Load(ModelDir, device);
        if (lora) model.ApplyLora(new LoraConfig(4, 8f, 0f, ["q_proj", "v_proj", "down_proj"]), seed: 7);
        else model.SetFullFineTuning();
        return model;
    }

    private static float Backward(CausalLM model, int m, int divisor)
    {
        var (ids, labels) = MicroBatch(m);
        using var tape = new Tape();
        using var loss = model.Loss(ids, labels, Batch, Seq);
        float value = loss.Item();
        tape.Backward(loss, 1f / divisor);
        return value;
    }

    /// <summary>One rank, accumulation World*Accum, the single-GPU trainer's step: clip, AdamW.</summary>
    private static (float[] Losses, float[] Norms, Dictionary<string, float[]> Weights) Reference(bool lora)
    {
        using var device = Device.Create("cpu");
        using var model = Load(device, lora);
        var trainable = model.TrainableParameters.ToList();
        using var adamW = new AdamW(trainable, 1e-2, 0.9, 0.999, 1e-8, 0.01);
        var losses = new List<float>();
        var norms = new List<float>();
        for (int w = 0; w < Windows; w++)
        {
            float sum = 0;
            for (int k = 0; k < World * Accum; k++) sum += Backward(model, w * World * Accum + k, World * Accum);
            losses.Add(sum / (World * Accum));
            norms.Add(GradClipping.ClipGradNorm(trainable, MaxNorm));
            adamW.Step();
            adamW.ZeroGrad();
        }
        return ([.. losses], [.. norms], trainable.ToDictionary(t => t.Name!, t => t.ToFloatArray()));
    }

    /// <summary>World ranks, accumulation Accum: rank r's k-th micro-batch of window w is the job's micro-batch w*World*Accum + k*World + r.</summary>
    private static (float[] Losses, float[] Norms, Dictionary<string, float[]> Weights)[] Distributed(bool lora, int stage,
        int windows = Windows, Func<ICommunicator, CausalLM, DistributedOptimizer, int>? resumeFrom = null) =>
        InProcessWorld.Run(World, (comm, device) =>
        {
            using var model = Load(device, lora);
            var trainable = model.TrainableParameters.ToList();
            using var opt = new DistributedOptimizer(comm, trainable, stage, 1e-2, 0.9, 0.999, 1e-8, 0.01, pagedState: false, bucketElements: 3000);
            int start = resumeFrom?.Invoke(comm, model, opt) ?? 0;
            var losses = new List<float>();
            var norms = new List<float>();
            for (int w = start; w < windows; w++)
            {
                float local = 0;
                for (int k = 0; k < Accum; k++)
                {
                    local += Backward(model, w * World * Accum + k * World + comm.Rank, Accum);
                    opt.AfterBackward();
                }
                using var sum = Tensor.FromArray(device, [local / Accum], 1);
                comm.AllReduce(sum, ReduceOp.Avg);
                losses.Add(sum.Item());
                var (norm, stepped) = opt.Step(MaxNorm, skip: false);
                Assert.True(stepped);
                norms.Add(norm);
            }
            return (losses.ToArray(), norms.ToArray(), trainable.ToDictionary(t => t.Name!, t => t.ToFloatArray()));
        });

    private static void AssertSame((float[] Losses, float[] Norms, Dictionary<string, float[]> Weights) expected,
        (float[] Losses, float[] Norms, Dictionary<string, float[]> Weights) actual, Dictionary<string, float[]> initial)
    {
        Close.Assert("losses", expected.Losses, actual.Losses, 1e-5, 1e-5);
        Close.Assert("grad norms", expected.Norms, actual.Norms, 1e-5, 1e-4);
        Assert.Equal(expected.Weights.Keys.Order(), actual.Weights.Keys.Order());
        foreach (var (name, want) in expected.Weights)
        {
            // Compare the change from the start: the weights themselves are large next to a few small updates.
            var dWant = want.Zip(initial[name], (a, b) => a - b).ToArray();
            var dGot = actual.Weights[name].Zip(initial[name], (a, b) => a - b).ToArray();
            double rel = Close.RelativeToMax(dWant, dGot);
            Assert.True(rel < 5e-4, $"{name}: update differs by {rel:G3} of its largest element");
        }
    }

    private static Dictionary<string, float[]> Initial(bool lora)
    {
        using var device = Device.Create("cpu");
        using var model = Load(device, lora);
        return model.TrainableParameters.ToDictionary(t => t.Name!, t => t.ToFloatArray());
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(0, false)]
    [InlineData(1, false)]
    [InlineData(2, false)]
    public void NRanks_EqualOneRankWithNTimesTheAccumulation(int stage, bool lora)
    {
        var reference = Reference(lora);
        var ranks = Distributed(lora, stage);
        var initial = Initial(lora);
        foreach (var rank in ranks) AssertSame(reference, rank, initial);
        // Every rank holds bit-identical weights (all-gathered or all-reduced), as they must to stay in step.
        foreach (var (name, w) in ranks[0].Weights) Assert.Equal(w, ranks[1].Weights[name]);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Resume_FromConsolidatedState_EqualsUninterrupted(int stage)
    {
        var full = Distributed(lora: true, stage);
        // Stop after one window: consolidated weights + optimizer state, as a checkpoint holds them.
        var saved = InProcessWorld.Run(World, (comm, device) =>
        {
            using var model = Load(device, true);
            var trainable = model.TrainableParameters.ToList();
            using var opt = new DistributedOptimizer(comm, trainable, stage, 1e-2, 0.9, 0.999, 1e-8, 0.01, false, 3000);
            for (int k = 0; k < Accum; k++)
            {
                Backward(model, k * World + comm.Rank, Accum);
                opt.AfterBackward();
            }
            opt.Step(MaxNorm, false);
            return (trainable.ToDictionary(t => t.Name!, t => t.ToFloatArray()), opt.ExportState().ToDictionary(kv => kv.Key, kv => kv.Value));
        });
        Assert.Equal(saved[0].Item2.Keys, saved[1].Item2.Keys);
        foreach (var (key, v) in saved[0].Item2) Assert.Equal(v, saved[1].Item2[key]); // consolidated: the same on every rank
        var (weights, state) = saved[0];
        // The single-GPU AdamW reads the consolidated state as its own (the checkpoint format is the one-GPU format).
        using (var device = Device.Create("cpu"))
        using (var model = Load(device, true))
        using (var single = new AdamW(model.TrainableParameters, 1e-2))
            single.LoadState(state);

        var resumed = Distributed(lora: true, stage, resumeFrom: (comm, model, opt) =>
        {
            foreach (var t in model.TrainableParameters) t.CopyFrom(weights[t.Name!]);
            opt.ReloadParameters();
            opt.LoadState(state);
            return 1;
        });
        for (int r = 0; r < World; r++)
        {
            Assert.Equal(full[r].Losses[1..], resumed[r].Losses);
            foreach (var (name, w) in full[r].Weights) Assert.Equal(w, resumed[r].Weights[name]);
        }
    }

    [Fact]
    public void Zero1_HoldsOneNthOfTheState()
    {
        var sizes = InProcessWorld.Run(4, (comm, device) =>
        {
            using var model = Load(device, lora: true);
            using var opt = new DistributedOptimizer(comm, model.TrainableParameters, 1, 1e-3, 0.9, 0.999, 1e-8, 0, false);
            return (opt.StateElements, model.TrainableParameters.Sum(t => t.Length));
        });
        Assert.All(sizes, s => Assert.Equal((s.Item2 + 3) / 4, s.StateElements));
    }
}
