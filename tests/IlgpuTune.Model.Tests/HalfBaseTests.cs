using IlgpuTune.Core;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

[Collection("ILGPU emulator")]
public class HalfBaseTests
{
    // With bf16 matmuls the weights are rounded to bf16 anyway, so a base stored in bf16 must give the very same numbers.
    [Fact]
    public void Bf16Base_GivesTheSameLogitsAndLoraGradsAsAnFp32Base()
    {
        using var device = Device.Create("ilgpu-cpu");
        device.MatmulPrecision = MatmulPrecision.BF16;
        var ids = Enumerable.Range(0, 16).Select(i => (i * 37 + 11) % 128).ToArray();
        (float[] Logits, Dictionary<string, float[]> Grads, long Bytes) Run(DType linear)
        {
            using var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), device, linear);
            PeftAdapter.Load(Path.Combine(Repo.Fixture("tiny/llama"), "adapter"), model);
            using var tape = new Tape();
            var (logits, loss) = model.ForwardWithLoss(ids, ids, 1, 16);
            using (logits)
            using (loss)
            {
                tape.Backward(loss);
                return (logits.ToFloatArray(), model.TrainableParameters.ToDictionary(p => p.Name!, p => p.Grad!.ToFloatArray()),
                    model.Parameters.Values.Sum(p => p.Bytes));
            }
        }
        var f32 = Run(DType.F32);
        var bf16 = Run(DType.BF16);
        Assert.Equal(f32.Logits, bf16.Logits);
        foreach (var (name, g) in f32.Grads) Assert.Equal(g, bf16.Grads[name]);
        Assert.True(bf16.Bytes < f32.Bytes * 0.7, $"bf16 base {bf16.Bytes} B vs fp32 {f32.Bytes} B");
    }

    [Fact]
    public void Bf16Base_IsRefusedForFullFineTuning_AndOnTheManagedCpuPath()
    {
        using var gpu = Device.Create("ilgpu-cpu");
        gpu.MatmulPrecision = MatmulPrecision.BF16;
        using (var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), gpu, DType.BF16))
            Assert.Contains("needs fp32 weights", Assert.Throws<InvalidOperationException>(model.SetFullFineTuning).Message);
        using var cpu = Device.Create("cpu");
        using var cpuModel = ModelLoader.Load(Repo.Fixture("tiny/llama"), cpu, DType.BF16);
        var e = Assert.Throws<ArgumentException>(() => cpuModel.Forward([1, 2, 3], 1, 3));
        Assert.Contains("16-bit weights need an ILGPU device", e.Message);
    }
}
