using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;
using Xunit.Abstractions;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// QLoRA (quantization nf4): the tiny Llama loaded with 4-bit decoder linears against transformers + PEFT on the same
/// quantization (tools/golden/make_qlora_golden.py), against the dense model on its dequantized weights, and its adapters
/// and exports as ordinary PEFT / HF folders.
/// </summary>
[Collection("ILGPU emulator")]
public class QLoraTests(ITestOutputHelper output)
{
    private static string Llama => Repo.Fixture("tiny/llama");

    [Theory]
    [InlineData("cpu")]
    [InlineData("ilgpu-cpu")]
    public void Parity_MatchesTransformersOnTheQuantizedModel(string kind)
    {
        using var device = Device.Create(kind);
        var rows = Parity.RunQLora(Llama, Path.Combine(Llama, "adapter"), Repo.Fixture("qlora/qlora.safetensors"), device);
        output.WriteLine(Parity.Format(rows));
        Assert.Equal(14 * 4, rows.Count(r => r.Case == "qlora/nf4"));
        Assert.Equal(28, rows.Count(r => r.Tensor.StartsWith("lora_grad.", StringComparison.Ordinal)));
        var failed = rows.Where(r => !r.Pass).ToList();
        Assert.True(failed.Count == 0, "parity failures:\n" + Parity.Format(failed));
    }

    [Fact]
    public void QuantizedModel_EqualsTheDenseModelOnItsDequantizedWeights_WithAndWithoutCheckpointing()
    {
        using var device = Device.Create("cpu");
        using var q = ModelLoader.Load(Llama, device, quantization: QuantType.Nf4);
        Assert.Equal(14, q.QuantizedWeights.Count);
        Assert.All(q.Linears, l => Assert.True(l.Quantized is not null && l.Weight is null, l.Name));
        Assert.Equal(["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"], q.Parameters.Keys.Take(2));
        Assert.Contains("lm_head.weight", q.Parameters.Keys);
        Assert.Empty(q.Parameters.Keys.Intersect(q.QuantizedWeights.Keys));
        Assert.Equal(q.ParameterCount, CausalLM.ExpectedWeights(q.Config).Sum(e => Tensor.ShapeLength(e.Shape)));
        Assert.Throws<InvalidOperationException>(q.SetFullFineTuning);

        using var source = WeightSource.Open(Llama);
        using var dense = CausalLM.FromWeights(q.Config, device, source.Names, n => source.Contains(n) ? source.Shape(n) : null,
            n => q.QuantizedWeights.TryGetValue(n, out var w) ? Dequantized(w) : source.ReadFloat32(n), "dequantized");
        string adapter = Path.Combine(Llama, "adapter");
        PeftAdapter.Load(adapter, q);
        PeftAdapter.Load(adapter, dense);
        using var golden = SafetensorsFile.Open(Path.Combine(Llama, "golden.safetensors"));
        var ids = golden.ReadInt32("input_ids");
        var labels = golden.ReadInt32("labels");

        var want = LossAndGrads(dense, ids, labels);
        var got = LossAndGrads(q, ids, labels);
        q.GradientCheckpointing = true;
        var checkpointed = LossAndGrads(q, ids, labels);
        for (int i = 0; i < want.Count; i++)
        {
            Close.Assert($"qlora {i}", want[i], got[i], 0, 0);
            Close.Assert($"qlora checkpointed {i}", want[i], checkpointed[i], 0, 0);
        }
    }

    [Fact]
    public void QLoraAdapter_IsAPlainPeftAdapter_AndExportWritesTheDequantizedMergedModel()
    {
        using var device = Device.Create("cpu");
        using var tmp = new TempDir();
        using var q = ModelLoader.Load(Llama, device, quantization: QuantType.Nf4);
        q.ApplyLora(new LoraConfig(4, 8, 0, ["q_proj", "v_proj", "down_proj"]), seed: 3);
        foreach (var l in q.Linears.Where(l => l.Lora is not null))
            l.LoraB!.CopyFrom(Rand.Floats(l.Name.Length, (int)l.LoraB.Length, 0.1f));
        using var golden = SafetensorsFile.Open(Path.Combine(Llama, "golden.safetensors"));
        var ids = golden.ReadInt32("input_ids");
        float[] Logits(CausalLM m)
        {
            using var logits = m.Forward(ids, 2, 16);
            return logits.ToFloatArray();
        }
        var logitsQ = Logits(q);

        // The adapter targets the original (dense) base and loads onto it.
        string adapterDir = tmp.File("adapter");
        PeftAdapter.Save(adapterDir, q, Llama);
        Assert.Contains(Llama.Replace("\\", "\\\\"), File.ReadAllText(Path.Combine(adapterDir, PeftAdapter.ConfigFile)));
        using (var onDense = ModelLoader.Load(Llama, device))
        {
            Assert.Equal(6, PeftAdapter.Load(adapterDir, onDense).Count);
            var d = Close.RelativeToMax(logitsQ, Logits(onDense));
            output.WriteLine($"QLoRA vs the same adapter on the fp32 base: logits differ by {d:E2} of max (quantization)");
            Assert.True(d > 1e-4, "the fp32 base should differ from its NF4 quantization"); // the tiny weights are std 0.2: large NF4 error
        }

        // Export: dequantized weights with the LoRA delta merged, so the folder computes what the QLoRA model computes.
        HfExport.Save(q, tmp.File("out"), DType.F32, 1L << 30);
        using var back = ModelLoader.Load(tmp.File("out"), device);
        Close.Assert("exported logits", logitsQ, Logits(back), 2e-5, 2e-5);
    }

    private static float[] Dequantized(Nf4Weight w)
    {
        using var t = w.Dequantize();
        return t.ToFloatArray();
    }

    // [logits, loss, lora grads...]
    private static List<float[]> LossAndGrads(CausalLM model, int[] ids, int[] labels)
    {
        using var tape = new Tape();
        var (logits, loss) = model.ForwardWithLoss(ids, labels, 2, 16);
        var r = new List<float[]> { logits.ToFloatArray(), loss.ToFloatArray() };
        tape.Backward(loss);
        r.AddRange(model.Linears.SelectMany(l => new[] { l.LoraA!, l.LoraB! }).Select(t => t.Grad!.ToFloatArray()));
        logits.Dispose();
        loss.Dispose();
        model.ZeroGrad();
        return r;
    }
}
