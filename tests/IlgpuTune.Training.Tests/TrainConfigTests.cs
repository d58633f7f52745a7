using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

public class TrainConfigTests
{
    private const string Minimal = """
        pretrained_model_name_or_path: /models/x
        data_path: data.jsonl
        """;

    [Fact]
    public void Defaults_AreXtunerDefaults()
    {
        var c = TrainConfig.Parse(Minimal, "c.yaml");
        Assert.Equal(["data.jsonl"], c.DataPath);
        Assert.Equal(2048, c.MaxLength);
        Assert.Equal(16, c.AccumulativeCounts);
        Assert.Equal(0.03, c.WarmupRatio);
        Assert.Null(c.Lora);
        Assert.Equal([0.9, 0.999], c.Betas);
    }

    [Fact]
    public void UnknownKey_IsAnErrorWithLineAndSuggestion()
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Parse(Minimal + "\nlearning_rat: 1e-4\n", "c.yaml"));
        Assert.Contains("c.yaml:3", e.Message);
        Assert.Contains("unknown key 'learning_rat'", e.Message);
        var l = Assert.Throws<ConfigException>(() => TrainConfig.Parse(Minimal + "\nlora: {rank: 8}\n", "c.yaml"));
        Assert.Contains("unknown key 'rank'", l.Message);
    }

    [Theory]
    [InlineData("lr: fast", "key 'lr': expected a number, got 'fast'")]
    [InlineData("batch_size: 0", "key 'batch_size': 0 is below the minimum 1")]
    [InlineData("dtype: float8", "'float8' is not one of bfloat16, float16, float32")]
    [InlineData("betas: [0.9]", "expected two numbers")]
    [InlineData("pack_to_max_length: maybe", "expected true or false")]
    [InlineData("quantization: nf4", "needs a 'lora' section")]
    [InlineData("offload_checkpoints: sometimes", "key 'offload_checkpoints': expected true or false")]
    [InlineData("offload_checkpoints: true\ngradient_checkpointing: false", "key 'offload_checkpoints' is true but 'gradient_checkpointing' is false")]
    public void BadValues_NameTheKey(string line, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Parse(Minimal + "\n" + line + "\n", "c.yaml"));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void OffloadCheckpoints_IsOffUnlessSet()
    {
        Assert.False(TrainConfig.Parse(Minimal, "c.yaml").OffloadCheckpoints);
        Assert.True(TrainConfig.Parse(Minimal, "c.yaml", ["offload_checkpoints=true"]).OffloadCheckpoints);
        Assert.False(TrainConfig.Parse(Minimal + "\ngradient_checkpointing: false\noffload_checkpoints: false\n", "c.yaml").OffloadCheckpoints);
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Parse(Minimal, "c.yaml", ["gradient_checkpointing=false", "offload_checkpoints=true"]));
        Assert.StartsWith("c.yaml: key 'offload_checkpoints'", e.Message);
    }

    [Fact]
    public void CfgOptions_OverrideScalarsListsAndNestedKeys()
    {
        var c = TrainConfig.Parse(Minimal + "\nlora: {r: 8}\n", "c.yaml",
            ["lr=1e-4", "lora.r=16", "lora.target_modules=[q_proj, v_proj]", "data_path=[a.jsonl, b.jsonl]", "max_iters=7"]);
        Assert.Equal(1e-4, c.Lr);
        Assert.Equal(16, c.Lora!.R);
        Assert.Equal(["q_proj", "v_proj"], c.Lora.TargetModules);
        Assert.Equal(["a.jsonl", "b.jsonl"], c.DataPath);
        Assert.Equal(7, c.MaxIters);
        Assert.Throws<ConfigException>(() => TrainConfig.Parse(Minimal, "c.yaml", ["nonsense"]));
    }

    [Fact]
    public void BuiltinConfigs_AllParse_AndIncludeXtunerNames()
    {
        Assert.Contains("qwen2_5_7b_instruct_qlora_colorist_e5", Builtins.ConfigNames);
        Assert.Contains("internlm2_5_chat_7b_qlora_alpaca_e3", Builtins.ConfigNames);
        Assert.Contains("llama3_8b_instruct_lora_oasst1_e3", Builtins.ConfigNames);
        foreach (var name in Builtins.ConfigNames)
            TrainConfig.Parse(Builtins.ConfigText(name), name);
    }

    [Fact]
    public void TinyDefault_ResolvesEmbeddedAssets()
    {
        var c = Builtins.LoadConfig(Builtins.DefaultConfig);
        Assert.True(File.Exists(Path.Combine(c.PretrainedModelNameOrPath, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(c.PretrainedModelNameOrPath, "tokenizer.json")));
        Assert.True(File.Exists(c.DataPath[0]));
    }
}
