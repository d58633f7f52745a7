using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>offload_embeddings: when the frozen embedding stays in host memory, the errors for asking it where it cannot
/// apply, and a QLoRA run with it equal to one without.</summary>
[Collection(DevicesCollection.Name)]
public class OffloadEmbeddingsTests
{
    private static TrainConfig Config(params string[] overrides) => Builtins.LoadConfig("tiny_llama_qlora_colorist_e3", overrides);

    [Fact]
    public void Auto_IsOnForQLoraOnAGpuWithAnUntiedHead_AndTrueForcesIt()
    {
        var llama = ModelConfig.Load(Repo.Fixture("tiny/llama"));
        var tied = ModelConfig.Load(Repo.Fixture("tiny/qwen2"));
        Assert.True(tied.TieWordEmbeddings);
        bool Rule(TrainConfig c, ModelConfig m, DeviceKind d) => TrainRun.OffloadEmbeddings(c, m, Caps(d), DType.BF16);
        // what Device.Create gives each kind (a CUDA GPU, ILGPU's CPU emulator, the managed CPU path)
        static DeviceCaps Caps(DeviceKind d) => d switch
        {
            DeviceKind.Cuda => new DeviceCaps(false, 128, (9, 0), true, 48 << 10, true),
            DeviceKind.IlgpuCpu => new DeviceCaps(true, 32, null, false, 48 << 10, true),
            _ => DeviceCaps.ManagedCpu,
        };

        var qlora = Config();
        Assert.True(Rule(qlora, llama, DeviceKind.Cuda));
        Assert.False(Rule(qlora, llama, DeviceKind.IlgpuCpu)); // auto: GPUs only
        Assert.False(Rule(qlora, llama, DeviceKind.Cpu));
        Assert.False(Rule(qlora, tied, DeviceKind.Cuda)); // the tied head is the table
        var lora = Config("quantization=none");
        Assert.False(Rule(lora, llama, DeviceKind.Cuda)); // auto: QLoRA only
        Assert.True(Rule(Config("quantization=none", "offload_embeddings=true"), llama, DeviceKind.Cuda));
        Assert.True(Rule(Config("offload_embeddings=true"), llama, DeviceKind.IlgpuCpu));
        Assert.True(Rule(Config("offload_embeddings=true"), llama, DeviceKind.Cpu));
        Assert.False(Rule(Config("offload_embeddings=false"), llama, DeviceKind.Cuda));
        Assert.Null(Config("offload_embeddings=null").OffloadEmbeddings);
    }

    [Fact]
    public void AskingForItWithFullFineTuningOrATiedHead_IsOneErrorNamingTheKey()
    {
        var full = Assert.Throws<ConfigException>(() => TrainConfig.Parse("""
            pretrained_model_name_or_path: /models/x
            data_path: data.jsonl
            offload_embeddings: true
            """, "c.yaml"));
        Assert.Contains("c.yaml: key 'offload_embeddings': full fine-tuning", full.Message);
        Assert.Contains("expected true or false", Assert.Throws<ConfigException>(() => Config("offload_embeddings=sometimes")).Message);

        using var work = new TempDir();
        var tied = Assert.Throws<ConfigException>(() => Trainer.Run(
            Config($"pretrained_model_name_or_path={Repo.Fixture("tiny/qwen2")}", "offload_embeddings=true", "device=cpu"),
            new TrainOptions { WorkDir = work.Path, Console = _ => { } }));
        Assert.StartsWith("offload_embeddings: ", tied.Message);
        Assert.Contains("tie_word_embeddings", tied.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(work.Path));
    }

    [Fact]
    public void QLoraRun_WithTheEmbeddingOnTheHost_HasBitwiseTheSameLosses()
    {
        (IReadOnlyList<LogRecord> Log, List<string> Lines) Run(bool offload)
        {
            using var work = new TempDir();
            var lines = new List<string>();
            // The managed CPU path (the emulator takes minutes to train): the same host lookup, uploaded to that device.
            var result = Trainer.Run(Config("max_iters=3", "logging_steps=1", "evaluation_freq=1000", "device=cpu",
                    "evaluation_inputs=[a shade of sky blue]", "evaluation_max_new_tokens=4", $"offload_embeddings={(offload ? "true" : "false")}"),
                new TrainOptions { WorkDir = work.Path, Console = lines.Add });
            return (result.Log, lines);
        }
        var off = Run(false);
        var on = Run(true);
        Assert.Contains(on.Lines, l => l.Contains("offload_embeddings: the frozen embedding (", StringComparison.Ordinal) && l.Contains(", F32) stays in host memory", StringComparison.Ordinal));
        Assert.DoesNotContain(off.Lines, l => l.Contains("offload_embeddings:", StringComparison.Ordinal));
        // The sample after training is generated through the host table too.
        static string Sample(List<string> lines) =>
            lines.Single(l => l.Contains("Sample output (after training)", StringComparison.Ordinal)) is var l ? l[l.IndexOf("Sample output", StringComparison.Ordinal)..] : "";
        Assert.Equal(Sample(off.Lines), Sample(on.Lines));
        Assert.Equal(off.Log.Select(r => r.Loss), on.Log.Select(r => r.Loss));
        Assert.Equal(off.Log.Select(r => r.GradNorm), on.Log.Select(r => r.GradNorm));
        Assert.Equal(3, on.Log.Count);
    }
}
