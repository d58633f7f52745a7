using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Model.Generation;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>A frozen input embedding kept in host memory (offload_embeddings) gives the very same numbers as the table on
/// the device: losses, LoRA gradients, logits and generated tokens. The upload and the embedding kernel run on ILGPU's CPU
/// accelerator (fp32 logits, the emulator's cheapest path); the bf16 QLoRA case, gradients and generation on the managed
/// CPU path, for time.</summary>
[Collection("ILGPU emulator")]
public class HostEmbeddingTests
{
    private static string Llama => Repo.Fixture("tiny/llama");

    [Theory]
    [InlineData("ilgpu-cpu", false)] // fp32 LoRA: an fp32 table encoded from the file, uploaded to the accelerator
    [InlineData("cpu", false)]
    [InlineData("cpu", true)]        // QLoRA on a bf16 table as stored (a view of the mapped file), with checkpointing
    public void OffloadedEmbedding_GivesBitwiseTheSameLossGradsAndTokens(string kind, bool qlora)
    {
        using var device = Device.Create(kind);
        using var tmp = new TempDir();
        string dir = qlora ? Bf16EmbeddingCopy(Llama, tmp.Path) : Llama;
        var dtype = qlora ? DType.BF16 : DType.F32;
        // The emulator compiles every kernel it runs (minutes for a backward): there the forward's logits alone.
        bool full = kind == "cpu";
        // Two rows with repeated tokens: the host gathers each distinct row once.
        int[] ids = [5, 17, 17, 99, 3, 5, 64, 127, 0, 17, 5, 5, 42, 99, 1, 2];
        int[] labels = [.. ids.Select((t, i) => i % 5 == 0 ? Ops.IgnoreIndex : t)];

        (float Loss, Dictionary<string, float[]> Grads, float[] Logits, int[] Tokens, long DeviceBytes) Run(bool onHost)
        {
            using var model = ModelLoader.Load(dir, device, dtype, qlora ? QuantType.Nf4 : null, embeddingOnHost: onHost);
            Assert.Equal(onHost, model.EmbeddingOnHost);
            Assert.Equal(onHost, !ReferenceEquals(model.EmbedTokens.Device, device));
            Assert.Equal(dtype, model.EmbedTokens.DType);
            PeftAdapter.Load(Path.Combine(Llama, "adapter"), model);
            model.GradientCheckpointing = qlora;
            float loss = 0;
            var grads = new Dictionary<string, float[]>();
            if (full)
            {
                using (var tape = new Tape())
                using (var l = model.Loss(ids, labels, 2, 8))
                {
                    tape.Backward(l);
                    loss = l.Item();
                }
                grads = model.TrainableParameters.ToDictionary(p => p.Name!, p => p.Grad!.ToFloatArray());
                model.ZeroGrad();
            }
            float[] logits;
            using (Tape.NoGrad())
            using (var t = model.Forward(ids, 2, 8))
                logits = t.ToFloatArray();
            int[] tokens = [];
            if (full)
            {
                using var g = new Generator(model, t => string.Concat(t.Select(i => (char)('a' + i % 26))));
                tokens = g.Generate([1, 17, 99, 3, 64], new GenerationOptions { MaxNewTokens = 5 }, new Random(0)).Tokens;
            }
            long onDevice = model.Parameters.Values.Where(p => ReferenceEquals(p.Device, device)).Sum(p => p.Bytes);
            return (loss, grads, logits, tokens, onDevice);
        }

        var want = Run(onHost: false);
        var got = Run(onHost: true);
        Assert.Equal(BitConverter.SingleToInt32Bits(want.Loss), BitConverter.SingleToInt32Bits(got.Loss));
        Assert.Equal(want.Logits, got.Logits);
        Assert.Equal(want.Grads.Keys, got.Grads.Keys);
        foreach (var (name, grad) in want.Grads) Assert.Equal(grad, got.Grads[name]);
        Assert.Equal(want.Tokens, got.Tokens);
        Assert.Equal(full, got.Tokens.Length > 0 && got.Grads.Count > 0);
        Assert.Equal(128L * 64 * dtype.Size(), want.DeviceBytes - got.DeviceBytes);
    }

    [Fact]
    public void TiedHead_KeepsItsEmbeddingOnTheDevice()
    {
        using var device = Device.Create("cpu");
        var e = Assert.Throws<ArgumentException>(() => ModelLoader.Load(Repo.Fixture("tiny/qwen2"), device, embeddingOnHost: true));
        Assert.Contains("tie_word_embeddings", e.Message);
    }

    // The fixture with its embedding stored in bf16 (values already bf16, so the fp32 path reads the same numbers).
    private static string Bf16EmbeddingCopy(string fixture, string dir)
    {
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(dir, "config.json"));
        using var src = SafetensorsModel.Open(Path.Combine(fixture, "model.safetensors"));
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), src.Names.Select(n => n == "model.embed_tokens.weight"
            ? new TensorToWrite(n, DType.BF16, src.Shape(n), SafetensorsWriter.Encode(src.ReadFloat32(n), DType.BF16))
            : SafetensorsWriter.F32(n, src.ReadFloat32(n), src.Shape(n))).ToList());
        return dir;
    }
}
