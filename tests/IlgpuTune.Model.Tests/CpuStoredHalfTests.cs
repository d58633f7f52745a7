using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// The managed CPU path loads a bf16/fp16 checkpoint as stored (frozenAsStored): the matrices view the mapped file and the
/// products widen them inside, giving the very numbers of the same checkpoint expanded to fp32, for inference and a LoRA base.
/// </summary>
public class CpuStoredHalfTests
{
    // The tiny llama fixture written back with every tensor in dtype (norms included, as HF bf16 checkpoints are).
    private static string HalfCopy(string dir, DType dtype)
    {
        string fixture = Repo.Fixture("tiny/llama");
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(dir, "config.json"));
        using var src = IO.SafetensorsModel.Open(Path.Combine(fixture, "model.safetensors"));
        IO.SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"),
            src.Names.Select(n => new IO.TensorToWrite(n, dtype, src.Shape(n), IO.SafetensorsWriter.Encode(src.ReadFloat32(n), dtype))).ToList());
        return dir;
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void StoredHalfBase_GivesTheLogitsAndLoraGradsOfTheExpandedOne(DType dtype)
    {
        using var device = Device.Create("cpu");
        using var tmp = new TempDir();
        string dir = HalfCopy(tmp.Path, dtype);
        var ids = Enumerable.Range(0, 16).Select(i => (i * 37 + 11) % 128).ToArray();
        (float[] Logits, float[] Generated, Dictionary<string, float[]> Grads, long Allocated) Run(bool asStored)
        {
            long before = device.Allocator.AllocatedBytes;
            using var model = ModelLoader.Load(dir, device, frozenAsStored: asStored);
            long allocated = device.Allocator.AllocatedBytes - before;
            if (asStored)
            {
                Assert.Equal(dtype, model.Parameters["model.layers.0.mlp.down_proj.weight"].DType);
                Assert.Equal(dtype, model.Parameters["model.embed_tokens.weight"].DType);
                Assert.Equal(DType.F32, model.Parameters["model.norm.weight"].DType);
            }
            float[] generated;
            using (var logits = model.Forward(ids, 1, 16)) generated = logits.ToFloatArray();
            PeftAdapter.Load(Path.Combine(Repo.Fixture("tiny/llama"), "adapter"), model);
            using var tape = new Tape();
            var (lg, loss) = model.ForwardWithLoss(ids, ids, 1, 16);
            using (lg)
            using (loss)
            {
                tape.Backward(loss);
                return (lg.ToFloatArray(), generated, model.TrainableParameters.ToDictionary(p => p.Name!, p => p.Grad!.ToFloatArray()), allocated);
            }
        }
        var wide = Run(false);
        var kept = Run(true);
        Assert.Equal(wide.Generated, kept.Generated);
        Assert.Equal(wide.Logits, kept.Logits);
        foreach (var (name, g) in wide.Grads) Assert.Equal(g, kept.Grads[name]);
        // Only the fp32 norms are allocated: the matrices are views of the mapped file.
        Assert.True(kept.Allocated * 20 < wide.Allocated, $"as stored {kept.Allocated} B allocated vs fp32 {wide.Allocated} B");
    }

    [Fact]
    public void StoredHalfBase_IsRefusedForFullFineTuning()
    {
        using var device = Device.Create("cpu");
        using var tmp = new TempDir();
        using var model = ModelLoader.Load(HalfCopy(tmp.Path, DType.BF16), device, frozenAsStored: true);
        Assert.Contains("needs fp32 weights", Assert.Throws<InvalidOperationException>(model.SetFullFineTuning).Message);
    }
}
