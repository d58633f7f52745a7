using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>The data side of a run: the trainer says why nothing is trainable; evaluation prompts use the training system.</summary>
public class DemoDataTests
{
    [Fact]
    public void NoTrainableSample_SaysTheTruncationReason()
    {
        using var work = new TempDir();
        var cfg = Builtins.LoadConfig("tiny_llama_lora_colorist_e3", ["prompt_template=llama2_chat", "max_length=64", "device=cpu"]);
        var e = Assert.Throws<InvalidDataException>(() => Trainer.Run(cfg, new TrainOptions { WorkDir = work.Path, Console = _ => { } }));
        Assert.Matches(@"no trainable sample: every sample lost its answer to truncation: system prompt of llama2_chat is \d+ tokens; max_length 64 leaves no room", e.Message);
    }

    [Fact]
    public void EvaluationPromptUsesTheMapFnSystem_WhenTheConfigSetsNone()
    {
        var cfg = Builtins.LoadConfig("tiny_llama_lora_colorist_e3", ["system_template=null"]);
        Assert.Null(cfg.SystemTemplate);
        string dir = cfg.PretrainedModelNameOrPath;
        var chat = new EvaluateChat(cfg, Tokenizers.FromDirectory(dir), dir, ModelConfig.Load(dir));
        string prompt = chat.Prompt("a shade of sky blue");
        Assert.StartsWith($"<|im_start|>system\n{XtunerTemplates.System["colorist"]}<|im_end|>\n<|im_start|>user\na shade of sky blue", prompt);
    }

    [Fact]
    public void DatasetColumnsAndTextSampleByAreConfigKeys()
    {
        var cfg = TrainConfig.Parse("""
            pretrained_model_name_or_path: m
            data_path: sheet.xlsx
            dataset_map_fn: default_map_fn
            dataset_columns: {input: question, output: answer}
            text_sample_by: paragraph
            """, "t.yaml");
        Assert.Equal(new Dictionary<string, string> { ["input"] = "question", ["output"] = "answer" }, cfg.DatasetColumns);
        Assert.Equal("paragraph", cfg.TextSampleBy);
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Parse("pretrained_model_name_or_path: m\ndata_path: a.txt\ntext_sample_by: word\n", "t.yaml"));
        Assert.Contains("text_sample_by", e.Message);
    }
}
