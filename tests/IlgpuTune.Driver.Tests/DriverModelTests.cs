using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Driver.Tests;

// Whole models on the driver runtime's backend over a RecordingRuntime (no GPU, so the numbers are zeros): every op that
// cached generation and the transformers parity cases (forward, LoRA, backward, fp32 and bf16) need is ported, and each of
// their launches passes the recorder's checks against the precompiled PTX.
public class DriverModelTests
{
    [Theory]
    [InlineData("sm_80", false)]
    [InlineData("sm_90", false)]
    [InlineData("sm_80", true)]
    public void CachedGenerationOfTheTinyLlamaRunsOnTheDriverBackend(string arch, bool nf4)
    {
        var runtime = new RecordingRuntime(arch);
        using var device = Device.FromDriver(runtime);
        using var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), device, quantization: nf4 ? QuantType.Nf4 : null);
        using var cache = new KvCache(model.Config, device, 16);
        using (var logits = model.ForwardCached([1, 5, 9], cache)) Assert.Equal(model.Config.VocabSize, logits.Dim(-1));
        using (var logits = model.ForwardCached([7], cache)) Assert.Equal([1, model.Config.VocabSize], logits.Shape);
        var kernels = runtime.Launches.Select(l => l.Kernel).ToHashSet();
        Assert.Contains("attention.cached.probs", kernels);
        Assert.Contains(nf4 ? "nf4.dequantize.absmax.scale" : "matmul.tiled", kernels);
    }

    [Theory]
    [InlineData("sm_80", false)]
    [InlineData("sm_90", true)]
    public void ParityCasesOfTheTinyLlamaRunEveryOpOnTheDriverBackend(string arch, bool bf16)
    {
        var runtime = new RecordingRuntime(arch);
        using var device = Device.FromDriver(runtime);
        if (bf16) device.Precision = Precision.BF16;
        var rows = Parity.Run(Repo.Fixture("tiny/llama"), device);
        Assert.NotEmpty(rows);
        var kernels = runtime.Launches.Select(l => l.Kernel).ToHashSet();
        Assert.Contains(bf16 ? "flashhalf.BackwardKeyValue.16.BFloat16" : "flashattention.backward.keyvalue", kernels);
        Assert.Contains("rmsnorm.backward.v4", kernels);
    }
}
