using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;
using Xunit.Abstractions;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// A folder saved by transformers from a bitsandbytes 4-bit model (tests/fixtures/bnb/llama, written by
/// tools/golden/make_bnb_checkpoint.py) loads with its stored NF4 weights: dequantized they equal bnb's dequantize_4bit
/// bit for bit, and the forward matches transformers on those weights.
/// </summary>
public class BnbCheckpointLoadTests(ITestOutputHelper output)
{
    private static string Dir => Repo.Fixture("bnb/llama");

    [Fact]
    public void StoredNf4Weights_LoadAsTheyAre_AndMatchTransformers()
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Dir, device);
        using var golden = SafetensorsModel.Open(Path.Combine(Dir, "golden.safetensors"));
        Assert.Equal(14, model.QuantizedWeights.Count);
        foreach (var (name, w) in model.QuantizedWeights)
        {
            using var bf16 = w.Dequantize(DType.BF16);
            Assert.Equal(golden.ReadBytes("dequant." + name), bf16.ToBytes());
        }

        var ids = golden.ReadInt32("input_ids");
        var want = golden.ReadFloat32("logits");
        using var logits = model.Forward(ids, 1, ids.Length);
        // transformers ran on bnb's bf16 dequantization; the engine's CPU path multiplies by the fp32 one.
        var got = logits.ToFloatArray();
        double maxAbs = want.Max(Math.Abs), err = 0;
        for (int i = 0; i < want.Length; i++) err = Math.Max(err, Math.Abs(want[i] - got[i]));
        output.WriteLine($"logits: max abs err {err:E2}, {err / maxAbs:E2} of max |logit|");
        Assert.True(err / maxAbs < 2e-2, $"logits differ by {err} (max |logit| {maxAbs})");
    }
}
