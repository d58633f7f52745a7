using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

public class HfExportTests
{
    private static string Tiny(string arch) => Repo.Fixture("tiny/" + arch);

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]     // tied: lm_head.weight is not written
    [InlineData("internlm2")] // remote-code config (auto_map) kept
    public void Export_RoundTripsThroughModelLoader(string arch)
    {
        using var tmp = new TempDir();
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Tiny(arch), device);
        var files = HfExport.Save(model, tmp.File("out"), DType.F32, 60_000, Tiny(arch));
        Assert.Contains("model.safetensors.index.json", files);

        using var back = ModelLoader.Load(tmp.File("out"), device);
        Assert.Equal(model.Parameters.Keys, back.Parameters.Keys);
        foreach (var (name, t) in model.Parameters) Assert.Equal(t.ToFloatArray(), back.Parameters[name].ToFloatArray());
        using (var st = SafetensorsModel.Open(tmp.File("out")))
        {
            Assert.Equal(model.Parameters.Keys.Order(StringComparer.Ordinal), st.Names.Order(StringComparer.Ordinal));
            Assert.Equal(arch != "qwen2", st.Contains("lm_head.weight") || st.Contains("output.weight"));
        }
        var config = JsonNode.Parse(File.ReadAllText(tmp.File("out/config.json")))!.AsObject();
        var original = JsonNode.Parse(File.ReadAllText(Path.Combine(Tiny(arch), "config.json")))!.AsObject();
        foreach (var (k, v) in original)
            if (k is not ("dtype" or "torch_dtype")) Assert.True(JsonNode.DeepEquals(v, config[k]), $"config key {k} changed");
        Assert.Equal("float32", (string?)config["torch_dtype"]);
        Assert.Equal(File.Exists(Path.Combine(Tiny(arch), "generation_config.json")), File.Exists(tmp.File("out/generation_config.json")));
    }

    [Fact]
    public void Export_WithLoraAttached_WritesTheMergedModel_InBf16()
    {
        using var tmp = new TempDir();
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Tiny("llama"), device);
        PeftAdapter.Load(Path.Combine(Tiny("llama"), "adapter"), model);
        HfExport.Save(model, tmp.File("f32"), DType.F32, 1L << 30);
        HfExport.Save(model, tmp.File("bf16"), DType.BF16, 1L << 30);

        // Same bytes as convert merge of the same base + adapter.
        Merge.Run(Tiny("llama"), Path.Combine(Tiny("llama"), "adapter"), tmp.File("merged"), 1L << 30, DType.F32);
        Assert.Equal(File.ReadAllBytes(tmp.File("merged/model.safetensors")), File.ReadAllBytes(tmp.File("f32/model.safetensors")));

        using var f32 = SafetensorsModel.Open(tmp.File("f32"));
        using var bf16 = SafetensorsModel.Open(tmp.File("bf16"));
        foreach (var n in f32.Names)
        {
            Assert.Equal("BF16", bf16.DTypeOf(n));
            Assert.Equal(f32.ReadFloat32(n).Select(v => HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(v))), bf16.ReadFloat32(n));
        }
        Assert.Equal("bfloat16", (string?)JsonNode.Parse(File.ReadAllText(tmp.File("bf16/config.json")))!["dtype"]);
    }

    [Fact]
    public void Export_OfACodeBuiltConfig_WritesAConfigThatReadsBackTheSame()
    {
        var raw = ModelConfig.Load(Tiny("llama"));
        var c = new ModelConfig
        {
            Architecture = raw.Architecture, ModelType = raw.ModelType, VocabSize = raw.VocabSize, HiddenSize = raw.HiddenSize,
            IntermediateSize = raw.IntermediateSize, NumHiddenLayers = raw.NumHiddenLayers, NumAttentionHeads = raw.NumAttentionHeads,
            NumKeyValueHeads = raw.NumKeyValueHeads, HeadDim = raw.HeadDim, MaxPositionEmbeddings = raw.MaxPositionEmbeddings,
            RmsNormEps = raw.RmsNormEps, RopeTheta = raw.RopeTheta, RopeScaling = raw.RopeScaling, TieWordEmbeddings = false,
            AttentionBias = false, OutputBias = false, MlpBias = false, BosTokenId = 1, EosTokenIds = [2, 5],
        };
        using var tmp = new TempDir();
        using var device = Device.Create("cpu");
        using var model = CausalLM.CreateRandom(c, device, seed: 3);
        HfExport.Save(model, tmp.File("out"), DType.F32, 1L << 30);
        var back = ModelConfig.Load(tmp.File("out"));
        Assert.Equal((c.Architecture, c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads),
            (back.Architecture, back.VocabSize, back.HiddenSize, back.IntermediateSize, back.NumHiddenLayers, back.NumAttentionHeads));
        Assert.Equal((c.NumKeyValueHeads, c.HeadDim, c.MaxPositionEmbeddings, c.RmsNormEps, c.RopeTheta, c.TieWordEmbeddings),
            (back.NumKeyValueHeads, back.HeadDim, back.MaxPositionEmbeddings, back.RmsNormEps, back.RopeTheta, back.TieWordEmbeddings));
        Assert.Equal(c.RopeScaling, back.RopeScaling);
        Assert.Equal([2, 5], back.EosTokenIds);
        Assert.Equal(DType.F32, back.TorchDtype);
        using var loaded = ModelLoader.Load(tmp.File("out"), device);
        int[] ids = [3, 1, 4, 1, 5, 9];
        using var a = model.Forward(ids, 1, ids.Length);
        using var b = loaded.Forward(ids, 1, ids.Length);
        Assert.Equal(a.ToFloatArray(), b.ToFloatArray());
    }
}
