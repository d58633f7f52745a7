using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>`convert quantize`: the bitsandbytes-format folder it writes loads back to exactly the model that quantize-on-load
/// builds from the original (same bytes, same logits), and holds the tensors and config transformers would save.</summary>
public class QuantizedExportTests
{
    private static string Llama => Repo.Fixture("tiny/llama");

    [Fact]
    public void Export_LoadsBackAsTheQuantizeOnLoadModel()
    {
        using var tmp = new TempDir();
        string outDir = Path.Combine(tmp.Path, "q");
        QuantizedExport.Run(Llama, outDir, 1L << 30);

        using var device = Device.Create("cpu");
        using var onLoad = ModelLoader.Load(Llama, device, quantization: QuantType.Nf4);
        using var stored = ModelLoader.Load(outDir, device);
        Assert.Equal(onLoad.QuantizedWeights.Keys.Order(), stored.QuantizedWeights.Keys.Order());
        foreach (var (name, w) in onLoad.QuantizedWeights)
        {
            var s = stored.QuantizedWeights[name];
            Assert.Equal(w.Packed.ToBytes(), s.Packed.ToBytes());
            Assert.Equal(w.QAbsmax!.ToBytes(), s.QAbsmax!.ToBytes());
            Assert.Equal(w.Absmax2!.ToFloatArray(), s.Absmax2!.ToFloatArray());
        }
        int[] ids = [1, 5, 9, 2, 7, 3];
        using var a = onLoad.Forward(ids, 1, ids.Length);
        using var b = stored.Forward(ids, 1, ids.Length);
        Assert.Equal(a.ToFloatArray(), b.ToFloatArray());

        using var weights = WeightSource.Open(outDir);
        const string q = "model.layers.0.self_attn.q_proj.weight";
        Assert.True(Bnb4Bit.IsQuantized(weights, q));
        Assert.Equal("U8", weights.DTypeOf(q));
        Assert.Equal("F32", weights.DTypeOf("model.embed_tokens.weight"));
        Assert.False(Bnb4Bit.IsQuantized(weights, "lm_head.weight"));
        var config = BnbQuantizationConfig.Read(Path.Combine(outDir, "config.json"))!;
        Assert.True(config.LoadIn4Bit && config.DoubleQuant && config.QuantType == "nf4");
    }

    [Fact]
    public void Export_RefusesAnAlreadyQuantizedModel()
    {
        using var tmp = new TempDir();
        var e = Assert.Throws<InvalidDataException>(() => QuantizedExport.Run(Repo.Fixture("bnb/llama"), Path.Combine(tmp.Path, "q"), 1L << 30));
        Assert.Contains("already quantized", e.Message);
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "q")));
    }
}
