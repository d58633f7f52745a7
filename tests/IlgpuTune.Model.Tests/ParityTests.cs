using IlgpuTune.Core;
using IlgpuTune.TestKit;
using Xunit.Abstractions;

namespace IlgpuTune.Model.Tests;

/// <summary>The engine against transformers/PEFT goldens (tools/golden/make_tiny_models.py), fp32.</summary>
// One ILGPU emulator test at a time: each runs a thread per simulated GPU thread, and two together thrash the CPU.
[Collection("ILGPU emulator")]
public class ParityTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("llama")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("internlm2")]
    [InlineData("qwen3")]
    [InlineData("internlm")]
    [InlineData("phi3")]
    [InlineData("gemma3_text")]
    [InlineData("mistral_sw")]
    [InlineData("mixtral")]
    [InlineData("qwen3_moe")]
    public void CpuPath_MatchesTransformers(string arch) => RunAndAssert(arch, "cpu");

    // The same parity through the ILGPU kernels, emulated on the CPU accelerator (CUDA runs it on the GPU machine).
    [Fact]
    public void IlgpuKernels_MatchTransformers_Llama() => RunAndAssert("llama", "ilgpu-cpu");

    private void RunAndAssert(string arch, string deviceKind)
    {
        using var device = Device.Create(deviceKind);
        var rows = Parity.Run(Repo.Fixture("tiny/" + arch), device);
        output.WriteLine(Parity.Format(rows));
        Assert.Contains(rows, r => r.Case.EndsWith("/full") && r.Tensor.StartsWith("grad."));
        Assert.Contains(rows, r => r.Case.EndsWith("/lora") && r.Tensor.StartsWith("lora_grad."));
        Assert.Contains(rows, r => r.Case.EndsWith("/packed"));
        var failed = rows.Where(r => !r.Pass).ToList();
        Assert.True(failed.Count == 0, "parity failures:\n" + Parity.Format(failed));
    }
}
