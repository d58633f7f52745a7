using System.Text.Json;
using IlgpuTune.TestKit;
using IlgpuTune.Training.Configs;

namespace IlgpuTune.Training.Tests;

/// <summary>XTuner .py configs: the Python subset reader, the mapping to TrainConfig, and five configs in XTuner's shape that
/// train exactly as their YAML twins.</summary>
public class PyConfigTests
{
    static string Dir => Path.Combine(Repo.Root, "tests", "IlgpuTune.Training.Tests", "PyConfigs");

    // ---- the reader ----

    [Fact]
    public void Reader_EvaluatesTheSubsetXtunerConfigsUse()
    {
        var py = PyConfig.Parse("""
            '''docstring'''
            import torch
            from mmengine.optim import (AmpOptimWrapper,
                                        LinearLR)  # comment
            from xtuner.utils import PROMPT_TEMPLATE as PT
            warmup_ratio = 0.03
            max_epochs = 3
            n = 16
            n *= 2
            end = warmup_ratio * max_epochs
            x = 7 // 2 + 2 ** 3 - 10 % 4
            s = 'a' "b" + 'c'
            t = PT.qwen_chat
            d = dict(type=AmpOptimWrapper, dtype=torch.float16, betas=(0.9, 0.999), l=[1, 2.5, None, True])
            e = {'k': d['dtype'], 'n': -n}
            sp = 1
            sampler = LinearLR \
                if sp > 1 else AmpOptimWrapper
            hooks = [1]
            if sp > 1:
                hooks += [2]
            elif not sp:
                hooks = []
            else:
                hooks += [3]
            """, "c.py");
        var g = py.Globals;
        Assert.Equal(32, ((PyInt)g["n"]).Value);
        Assert.Equal(0.03 * 3, ((PyFloat)g["end"]).Value);
        Assert.Equal(3 + 8 - 2, ((PyInt)g["x"]).Value);
        Assert.Equal("abc", ((PyStr)g["s"]).Value);
        Assert.Equal("xtuner.utils.PROMPT_TEMPLATE.qwen_chat", ((PySymbol)g["t"]).Name);
        var d = (PyDict)g["d"];
        Assert.Equal("mmengine.optim.AmpOptimWrapper", ((PySymbol)d.Get("type")!).Name);
        Assert.Equal("torch.float16", ((PySymbol)d.Get("dtype")!).Name);
        Assert.Equal("[1, 2.5, None, True]", PyConfig.Repr(d.Get("l")!));
        Assert.Equal("(0.9, 0.999)", PyConfig.Repr(d.Get("betas")!));
        Assert.Equal(-32, ((PyInt)((PyDict)g["e"]).Get("n")!).Value);
        Assert.Equal("mmengine.optim.AmpOptimWrapper", ((PySymbol)g["sampler"]).Name);
        Assert.Equal("[1, 3]", PyConfig.Repr(g["hooks"]));
        Assert.Equal(14, d.Line);
    }

    [Theory]
    [InlineData("a = 1\nfor i in range(3):\n    a += i\n", "c.py:2", "'for' is outside the config subset")]
    [InlineData("a = 1\nb = f'{a}'\n", "c.py:2", "f-strings")]
    [InlineData("a = 1\n\nb = c + 1\n", "c.py:3", "name 'c' is not defined")]
    [InlineData("a = dict(x=1)\na.x = 2\n", "c.py:2", "assignment to an attribute")]
    [InlineData("a = dict(\n  x=1,\n", "c.py:", "unclosed bracket")]
    [InlineData("a = [i for i in x]\n", "c.py:1", "name 'i' is not defined")]
    [InlineData("_base_ = ['./x.py']\n", "c.py:1", "_base_ config inheritance")]
    [InlineData("import os\na = os.path.join('a', 'b')\n", "c.py:2", "positional arguments")]
    public void Reader_OutsideTheSubset_IsAnErrorNamingTheLine(string text, string where, string message)
    {
        var e = Assert.Throws<ConfigException>(() => PyConfig.Parse(text, "c.py"));
        Assert.StartsWith(where, e.Message);
        Assert.Contains(message, e.Message);
    }

    // ---- the mapping ----

    [Fact]
    public void QLoraAlpaca_MapsEveryField()
    {
        var c = XtunerPyConfig.Load(Path.Combine(Dir, "tiny_llama_qlora_alpaca_e3.py"));
        Assert.Equal("@tiny", c.PretrainedModelNameOrPath);
        Assert.Equal("float16", c.Dtype);
        Assert.Equal("nf4", c.Quantization);
        Assert.Equal((16, 32.0, 0.1), (c.Lora!.R, c.Lora.LoraAlpha, c.Lora.LoraDropout));
        Assert.Null(c.Lora.TargetModules);
        Assert.Equal([Path.Combine(Dir, "alpaca.jsonl")], c.DataPath); // beside the config when not in the working directory
        Assert.Equal(("alpaca_map_fn", "qwen_chat", "alpaca"), (c.DatasetMapFn, c.PromptTemplate, c.SystemTemplate));
        Assert.Equal((128, true, true), (c.MaxLength, c.PackToMaxLength, c.ShuffleBeforePack));
        Assert.Equal((1, 2, 3), (c.BatchSize, c.AccumulativeCounts, c.MaxEpochs));
        Assert.Equal((1e-3, 0.0, 1.0, 0.03), (c.Lr, c.WeightDecay, c.MaxNorm, c.WarmupRatio));
        Assert.Equal((500, 2, 500, 1, 4), (c.SaveSteps, c.SaveTotalLimit, c.EvaluationFreq, c.LoggingSteps, c.EvaluationMaxNewTokens));
        Assert.False(c.GradientCheckpointing);
        Assert.Equal(42, c.Seed); // randomness.seed None
        Assert.Contains(c.Notes, n => n.Contains("use_varlen_attn=False", StringComparison.Ordinal));
        Assert.Contains(c.Notes, n => n.Contains("randomness.seed is None", StringComparison.Ordinal));
    }

    [Fact]
    public void CfgOptions_XtunerDottedKeysAndOurKeys()
    {
        var c = XtunerPyConfig.Load(Path.Combine(Dir, "tiny_llama_qlora_alpaca_e3.py"),
            ["train_dataloader.batch_size=2", "optim_wrapper.optimizer.lr=5e-5", "custom_hooks.1.every_n_iters=7",
             "model.lora.r=8", "randomness.seed=3", "max_iters=9", "lora.lora_alpha=4"]);
        Assert.Equal((2, 5e-5, 7, 8, 3, 9, 4.0), (c.BatchSize, c.Lr, c.EvaluationFreq, c.Lora!.R, c.Seed, c.MaxIters, c.Lora.LoraAlpha));
        var lists = XtunerPyConfig.Load(Path.Combine(Dir, "tiny_llama_qlora_alpaca_e3.py"),
            ["model.lora.target_modules=q_proj,v_proj", "custom_hooks.1.evaluation_inputs=[a, 'b c']", "model.lora.lora_dropout=0", "model.use_activation_checkpointing=true"]);
        Assert.Equal(["q_proj", "v_proj"], lists.Lora!.TargetModules);
        Assert.Equal(["a", "b c"], lists.EvaluationInputs);
        Assert.Equal(0, lists.Lora.LoraDropout);
        Assert.True(lists.GradientCheckpointing);
        // As in mmengine, train_dataset's top-level copy is not the one inside train_dataloader.
        var same = XtunerPyConfig.Load(Path.Combine(Dir, "tiny_llama_lora_custom_sft_e1.py"), ["train_dataset.max_length=64"]);
        Assert.Equal(128, same.MaxLength);
        var e = Assert.Throws<ConfigException>(() => XtunerPyConfig.Load(Path.Combine(Dir, "tiny_llama_qlora_alpaca_e3.py"), ["train_dataloder.batch_size=2"]));
        Assert.Contains("did you mean 'train_dataloader'", e.Message);
    }

    [Theory]
    [InlineData("load_in_8bit=False,", "load_in_8bit=True,", "load_in_8bit: 8-bit (LLM.int8) training is not supported")]
    [InlineData("bnb_4bit_quant_type='nf4'", "bnb_4bit_quant_type='fp4'", "bnb_4bit_quant_type: 'fp4' is not supported (ilgpu-tune needs 'nf4')")]
    [InlineData("        by_epoch=True,\n        begin=0,", "        by_epoch=False,\n        begin=0,", "LinearLR.by_epoch: False is not supported")]
    [InlineData("sequence_parallel_size = 1", "sequence_parallel_size = 2", "multi-GPU training is not there yet")]
    [InlineData("alpaca_map_fn", "msagent_react_map_fn", "dataset_map_fn=msagent_react_map_fn: unknown dataset format")]
    [InlineData("prompt_template = PROMPT_TEMPLATE.qwen_chat", "prompt_template = PROMPT_TEMPLATE.qwen_chatt", "PROMPT_TEMPLATE.<name>")]
    [InlineData("        task_type='CAUSAL_LM'))", "        task_type='CAUSAL_LM', use_dora=True))", "DoRA is not there yet")]
    [InlineData("    dtype='float16')", "    dtype='float16', foo=1)", "optim_wrapper.foo: not a setting ilgpu-tune can honour")]
    [InlineData("end=max_epochs,", "T_max=max_epochs,", "end=max_epochs instead of T_max")]
    [InlineData("train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)", "train_cfg = dict(by_epoch=False, max_iters=10)", "by_epoch=True")]
    [InlineData("max_keep_ckpts=save_total_limit),", "max_keep_ckpts=save_total_limit, by_epoch=True),", "keyword argument 'by_epoch' repeated")]
    public void FieldsThatWouldChangeTraining_AreClearErrorsWithTheirLine(string find, string replace, string message)
    {
        string text = File.ReadAllText(Path.Combine(Dir, "tiny_llama_qlora_alpaca_e3.py"));
        Assert.Contains(find, text);
        var e = Assert.Throws<ConfigException>(() => XtunerPyConfig.Parse(text.Replace(find, replace), "x.py"));
        Assert.Matches(@"^x\.py:\d+: ", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void OlderXtunerShapes_AreRead()
    {
        string text = File.ReadAllText(Path.Combine(Dir, "tiny_llama_qlora_alpaca_e3.py"))
            .Replace("train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)", "train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)");
        text = System.Text.RegularExpressions.Regex.Replace(text, @"checkpoint=dict\([^)]*\),", "checkpoint=dict(type=CheckpointHook, interval=1),");
        var c = XtunerPyConfig.Parse(text, Path.Combine(Dir, "old.py"));
        Assert.Equal(3, c.MaxEpochs);
        Assert.Equal(500, c.SaveSteps);
        Assert.Equal(-1, c.SaveTotalLimit);
        Assert.Contains(c.Notes, n => n.Contains("CheckpointHook by_epoch=True", StringComparison.Ordinal));
    }

    // ---- five configs in XTuner's shape train exactly as their YAML twins ----

    public static TheoryData<string, string> Twins => new()
    {
        { "tiny_llama_qlora_alpaca_e3", """
            pretrained_model_name_or_path: "@tiny"
            dtype: float16
            quantization: nf4
            lora: {r: 16, lora_alpha: 32, lora_dropout: 0.1}
            gradient_checkpointing: false
            data_path: DIR/alpaca.jsonl
            dataset_map_fn: alpaca_map_fn
            prompt_template: qwen_chat
            system_template: alpaca
            max_length: 128
            accumulative_counts: 2
            max_epochs: 3
            lr: 1.0e-3
            weight_decay: 0
            evaluation_inputs: ['sky blue', 'Please tell me the hex code of gold']
            evaluation_max_new_tokens: 4
            logging_steps: 1
            """ },
        { "tiny_llama_lora_custom_sft_e1", """
            pretrained_model_name_or_path: "@tiny"
            dtype: float32
            lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj]}
            gradient_checkpointing: false
            data_path: [DIR/conversations.jsonl]
            dataset_map_fn: openai_map_fn
            prompt_template: qwen_chat
            system: You are a color assistant.
            max_length: 128
            accumulative_counts: 2
            max_epochs: 1
            lr: 1.0e-3
            weight_decay: 0
            evaluation_inputs: ['sky blue', 'Please tell me the hex code of gold']
            evaluation_max_new_tokens: 4
            logging_steps: 1
            seed: 7
            """ },
        { "tiny_llama_full_alpaca_e3", """
            pretrained_model_name_or_path: "@tiny"
            dtype: bfloat16
            gradient_checkpointing: false
            data_path: DIR/alpaca.jsonl
            dataset_map_fn: alpaca_map_fn
            prompt_template: qwen_chat
            system_template: alpaca
            max_length: 128
            accumulative_counts: 2
            max_epochs: 3
            lr: 2.0e-4
            weight_decay: 0.01
            evaluation_inputs: ['sky blue', 'Please tell me the hex code of gold']
            evaluation_max_new_tokens: 4
            logging_steps: 1
            seed: 3
            """ },
        { "tiny_llama_full_custom_pretrain_e1", """
            pretrained_model_name_or_path: "@tiny"
            dtype: bfloat16
            gradient_checkpointing: false
            data_path: [DIR/pretrain.jsonl]
            dataset_map_fn: pretrain_map_fn
            prompt_template: none
            max_length: 128
            shuffle_before_pack: false
            accumulative_counts: 2
            max_epochs: 1
            lr: 2.0e-4
            weight_decay: 0.01
            evaluation_inputs: ['The color gold', 'Designers like']
            evaluation_max_new_tokens: 4
            logging_steps: 1
            seed: 3
            """ },
        { "tiny_llama_qlora_colorist_e5", """
            pretrained_model_name_or_path: "@tiny"
            dtype: bfloat16
            quantization: nf4
            lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0}
            gradient_checkpointing: false
            data_path: "@tiny/colorist.jsonl"
            dataset_map_fn: colors_map_fn
            prompt_template: qwen_chat
            system_template: colorist
            max_length: 128
            accumulative_counts: 2
            max_epochs: 5
            lr: 1.0e-3
            weight_decay: 0
            evaluation_inputs: ['请给我一个像天空一样清澈透明的蓝色。', 'Please give me a clear blue like the sky.']
            evaluation_max_new_tokens: 4
            logging_steps: 1
            """ },
    };

    [Theory]
    [MemberData(nameof(Twins))]
    public void XtunerShapedConfig_IsItsYamlTwin_AndTrainsToTheSameLoss(string name, string yaml)
    {
        string[] run = ["max_iters=3", "device=cpu", "evaluation_freq=1000"];
        using var yamlFile = new TempDir();
        File.WriteAllText(yamlFile.File(name + ".yaml"), yaml.Replace("DIR/", Dir + "/"));
        var fromPy = Builtins.LoadConfig(Path.Combine(Dir, name + ".py"), run);
        var fromYaml = Builtins.LoadConfig(yamlFile.File(name + ".yaml"), run);
        Assert.Equal(Json(fromYaml), Json(fromPy));

        using var a = new TempDir();
        using var b = new TempDir();
        var py = Trainer.Run(fromPy, new TrainOptions { WorkDir = a.Path, Console = _ => { } });
        var ya = Trainer.Run(fromYaml, new TrainOptions { WorkDir = b.Path, Console = _ => { } });
        Assert.Equal(3, py.Log.Count);
        Assert.Equal(ya.Log.Select(l => l.Loss), py.Log.Select(l => l.Loss));
        Assert.All(py.Log, l => Assert.True(double.IsFinite(l.Loss) && l.Loss > 0));
    }

    // ---- copy-cfg --format py ----

    [Fact]
    public void EveryBuiltin_WrittenAsPy_ReadsBackToTheSameConfig()
    {
        using var dir = new TempDir();
        foreach (var name in Builtins.ConfigNames)
        {
            var yaml = TrainConfig.Parse(Builtins.ConfigText(name), name + ".yaml");
            string path = dir.File(name + ".py");
            File.WriteAllText(path, XtunerPyWriter.Write(yaml, name));
            var py = XtunerPyConfig.Load(path);
            Assert.Equal(Json(yaml), Json(py));
        }
    }

    static string Json(TrainConfig c)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(c))!.AsObject();
        node.Remove("Source");
        node.Remove("Notes");
        node["DatasetMapFn"] = IlgpuTune.Data.Datasets.DatasetMapFns.Parse(c.DatasetMapFn).ToString(); // alpaca == alpaca_map_fn
        return node.ToJsonString();
    }
}

public class XtunerYamlHabitsTests
{
    [Fact]
    public void YamlNull_IsXtunersNone_ForMapFnAndTemplate()
    {
        var c = TrainConfig.Parse("pretrained_model_name_or_path: /m\ndata_path: d.jsonl\ndataset_map_fn: null\nprompt_template: ~\n", "c.yaml");
        Assert.Equal(IlgpuTune.Data.Datasets.DatasetFormat.Conversation, IlgpuTune.Data.Datasets.DatasetMapFns.Parse(c.DatasetMapFn));
        Assert.Equal("none", c.PromptTemplate);
        Assert.Equal("none", TrainConfig.Parse("pretrained_model_name_or_path: /m\ndata_path: d.jsonl\n", "c.yaml", ["prompt_template=null"]).PromptTemplate);
    }

    [Fact]
    public void InternLmV1Config_IsListed_AndItsModelConfigLoads()
    {
        var cfg = TrainConfig.Parse(Builtins.ConfigText("internlm_chat_7b_qlora_oasst1_e3"), "internlm_chat_7b_qlora_oasst1_e3.yaml");
        Assert.Equal("internlm_chat", cfg.PromptTemplate);
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), """{"architectures": ["InternLMForCausalLM"], "model_type": "internlm", "hidden_size": 64}""");
        var model = IlgpuTune.Model.ModelConfig.Load(dir.Path);
        Assert.Equal(IlgpuTune.Model.Architecture.InternLM, model.Architecture);
        Assert.True(model.AttentionBias && model.OutputBias);
    }
}
