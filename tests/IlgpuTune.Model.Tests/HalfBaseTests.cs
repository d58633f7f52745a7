using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

[Collection("ILGPU emulator")]
public class HalfBaseTests
{
    // With bf16 matmuls the weights are rounded to bf16 anyway, so a base stored in bf16 must give the very same numbers
    // as the fp32 one, given a checkpoint whose weights are bf16 values (as HF checkpoints are: the embedding rows are
    // looked up, not multiplied, so they are exact only then).
    [Fact]
    public void Bf16Base_GivesTheSameLogitsAndLoraGradsAsAnFp32Base()
    {
        using var device = Device.Create("ilgpu-cpu");
        device.Precision = Precision.BF16;
        using var tmp = new TempDir();
        string dir = Bf16ValuedCopy(Repo.Fixture("tiny/llama"), tmp.Path);
        var ids = Enumerable.Range(0, 16).Select(i => (i * 37 + 11) % 128).ToArray();
        (float[] Logits, Dictionary<string, float[]> Grads, long Bytes) Run(DType linear)
        {
            using var model = ModelLoader.Load(dir, device, linear);
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
        Assert.True(bf16.Bytes < f32.Bytes * 0.6, $"bf16 base {bf16.Bytes} B vs fp32 {f32.Bytes} B");
    }

    private static string Bf16ValuedCopy(string fixture, string dir)
    {
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(dir, "config.json"));
        using var src = IO.SafetensorsModel.Open(Path.Combine(fixture, "model.safetensors"));
        IO.SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), src.Names.Select(n =>
        {
            var bits = IO.SafetensorsWriter.Encode(src.ReadFloat32(n), DType.BF16);
            var f = new float[bits.Length / 2];
            Kernels.Cast.FromBf16Cpu(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bits.Span), f);
            return IO.SafetensorsWriter.F32(n, f, src.Shape(n));
        }).ToList());
        return dir;
    }

    [Fact]
    public void Bf16Base_IsRefusedForFullFineTuning_AndOnAnFp32Accelerator()
    {
        using var gpu = Device.Create("ilgpu-cpu");
        gpu.Precision = Precision.BF16;
        using (var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), gpu, DType.BF16))
            Assert.Contains("needs fp32 weights", Assert.Throws<InvalidOperationException>(model.SetFullFineTuning).Message);
        // (The managed CPU path widens a frozen 16-bit weight inside its products: CpuStoredHalfTests.)
        gpu.Precision = Precision.F32;
        using var fp32Model = ModelLoader.Load(Repo.Fixture("tiny/llama"), gpu, DType.BF16);
        var e = Assert.Throws<ArgumentException>(() => fp32Model.Forward([1, 2, 3], 1, 3));
        Assert.Contains("16-bit weights need an ILGPU device", e.Message);
    }
}
