using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

public class LoaderTests
{
    private static readonly string Llama = Repo.Fixture("tiny/llama");

    // Copies the llama fixture's config and rewrites its weights through `edit`.
    private static string CopyWith(TempDir tmp, Func<List<TensorToWrite>, List<TensorToWrite>> edit)
    {
        File.Copy(Path.Combine(Llama, "config.json"), tmp.File("config.json"));
        using var src = SafetensorsFile.Open(Path.Combine(Llama, "model.safetensors"));
        var tensors = src.Tensors.Select(t => SafetensorsWriter.F32(t.Name, src.ReadFloat32(t.Name), t.Shape)).ToList();
        SafetensorsWriter.Write(tmp.File("model.safetensors"), edit(tensors));
        return tmp.Path;
    }

    [Fact]
    public void MissingTensor_IsAnErrorNamingTheKey()
    {
        using var tmp = new TempDir();
        var dir = CopyWith(tmp, ts => ts.Where(t => t.Name != "model.layers.1.mlp.up_proj.weight").ToList());
        using var device = Device.Create("cpu");
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir, device));
        Assert.Contains("missing: model.layers.1.mlp.up_proj.weight", e.Message);
    }

    [Fact]
    public void UnexpectedTensor_IsAnErrorNamingTheKey()
    {
        using var tmp = new TempDir();
        var dir = CopyWith(tmp, ts => [.. ts, SafetensorsWriter.F32("model.layers.0.extra.weight", [1f, 2f], 2)]);
        using var device = Device.Create("cpu");
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir, device));
        Assert.Contains("unexpected: model.layers.0.extra.weight", e.Message);
    }

    [Fact]
    public void MisShapedTensor_IsAnErrorNamingKeyAndShapes()
    {
        using var tmp = new TempDir();
        var dir = CopyWith(tmp, ts => ts.Select(t => t.Name == "model.norm.weight"
            ? SafetensorsWriter.F32(t.Name, new float[32], 32) : t).ToList());
        using var device = Device.Create("cpu");
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir, device));
        Assert.Contains("'model.norm.weight' has shape [32], expected [64]", e.Message);
    }

    [Fact]
    public void Config_ReadsDtypeAliasesRopeParametersAndDefaults()
    {
        var v5 = ModelConfig.FromJson(JsonNode.Parse("""
            {"model_type":"llama","hidden_size":64,"num_attention_heads":4,"dtype":"bfloat16",
             "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,
             "high_freq_factor":4.0,"original_max_position_embeddings":8192},"eos_token_id":[2,7]}
            """)!.AsObject(), "v5");
        Assert.Equal(DType.BF16, v5.TorchDtype);
        Assert.Equal(500000.0, v5.RopeTheta);
        Assert.Equal("llama3", v5.RopeScaling.Type);
        Assert.Equal(8.0, v5.RopeScaling.Factor);
        Assert.Equal([2, 7], v5.EosTokenIds);
        Assert.Equal(4, v5.NumKeyValueHeads); // defaults to num_attention_heads
        Assert.Equal(16, v5.HeadDim);
        Assert.Equal(32000, v5.VocabSize);

        var legacy = ModelConfig.FromJson(JsonNode.Parse("""
            {"model_type":"qwen2","torch_dtype":"float16","rope_theta":1000000.0,"rope_scaling":{"type":"linear","factor":2.0}}
            """)!.AsObject(), "legacy");
        Assert.Equal(DType.F16, legacy.TorchDtype);
        Assert.Equal("linear", legacy.RopeScaling.Type);
        Assert.True(legacy.AttentionBias);
        Assert.False(legacy.OutputBias);
        Assert.Equal(151936, legacy.VocabSize);
    }

    [Fact]
    public void Config_BadValues_NameTheKey()
    {
        var e = Assert.Throws<InvalidDataException>(() => ModelConfig.FromJson(
            JsonNode.Parse("""{"model_type":"llama","hidden_size":"big"}""")!.AsObject(), "cfg.json"));
        Assert.Contains("cfg.json: key 'hidden_size'", e.Message);
        var u = Assert.Throws<InvalidDataException>(() => ModelConfig.FromJson(
            JsonNode.Parse("""{"model_type":"gpt2"}""")!.AsObject(), "cfg.json"));
        Assert.Contains("not supported", u.Message);
    }

    [Fact]
    public void InternLM2_WqkvColumns_GroupQueriesPerKvHead()
    {
        var c = ModelConfig.FromJson(JsonNode.Parse("""
            {"model_type":"internlm2","hidden_size":8,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":2,"bias":false}
            """)!.AsObject(), "c");
        var (q, k, v) = CausalLM.WqkvColumns(c);
        // G = 2: rows per kv group are [q(2h), q(2h+1), k(h), v(h)], each head_dim = 2 wide.
        Assert.Equal([0, 1, 2, 3, 8, 9, 10, 11], q);
        Assert.Equal([4, 5, 12, 13], k);
        Assert.Equal([6, 7, 14, 15], v);
    }

    [Theory]
    [InlineData("torch/llama")]        // pytorch_model-0000N-of-00003.bin + index (zip format)
    [InlineData("torch/llama_legacy")] // one legacy-format pytorch_model.bin
    public void PytorchModelBin_LoadsTheSameModelAsSafetensors(string dir)
    {
        using var device = Device.Create("cpu");
        using var fromSt = ModelLoader.Load(Llama, device);
        using var fromBin = ModelLoader.Load(Repo.Fixture(dir), device);
        foreach (var (name, t) in fromSt.Parameters) Assert.Equal(t.ToFloatArray(), fromBin.Parameters[name].ToFloatArray());
        int[] ids = [1, 5, 9, 33, 127, 0, 64];
        using var a = fromSt.Forward(ids, 1, ids.Length);
        using var b = fromBin.Forward(ids, 1, ids.Length);
        Assert.Equal(a.ToFloatArray(), b.ToFloatArray());
    }
}
