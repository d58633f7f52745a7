// Fine-tuning from an app: the trainer `ilgpu-tune train` runs, from a TrainConfig object built in code (or loaded with
// TrainConfig.Load / XtunerPyConfig.Load). Same validation, work dir layout, checkpoints and outputs as the CLI.
using IlgpuTune.Training;

namespace IlgpuTune.Embedding;

public static class FineTuning
{
    /// <summary>
    /// Trains with <paramref name="config"/> into <paramref name="options"/>' work dir (default: ./work_dirs/&lt;config name&gt;)
    /// and returns where the adapter / model went. Cancel <see cref="TrainOptions.Stop"/> to stop after the current
    /// iteration with a resumable checkpoint.
    /// </summary>
    public static TrainResult Train(TrainConfig config, TrainOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        return Trainer.Run(config, options ?? new TrainOptions());
    }
}
