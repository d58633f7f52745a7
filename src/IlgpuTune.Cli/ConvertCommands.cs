using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
using IlgpuTune.Training;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed partial class ConvertCommands
{
    [Command("adapter", Description = "A training checkpoint (work_dir/iter_N) as a PEFT adapter folder (LoRA) or a full HF model folder")]
    public int Adapter([Argument(Description = "checkpoint folder")] string checkpoint, [Argument(Description = "output folder")] string output,
        [Option("dtype", Description = "float32, bfloat16 or float16 (default float32)")] string dtype = "float32")
    {
        var type = ParseDtype(dtype);
        return Interruptible(output, () => Console.WriteLine(CheckpointExport.Run(CliPaths.Checkpoint(checkpoint), output, type)));
    }

    [Command("pth_to_hf", Description = "xtuner convert pth_to_hf: a training checkpoint (work_dir/iter_N, or iter_N.pth as XTuner names it) " +
        "as a PEFT adapter (LoRA) or an HF model folder (full), checked against its config; float16 unless --fp32")]
    public int PthToHf([Argument(Description = "config file or built-in config name the checkpoint was trained with")] string config,
        [Argument(Description = "checkpoint folder (work_dir/iter_N)")] string checkpoint,
        [Argument(Description = "output folder")] string saveDir,
        [Option("fp32", Description = "save as float32 (default float16, as XTuner)")] bool fp32 = false,
        [Option("max-shard-size", Description = "largest shard of a full model (default 2GB, as XTuner)")] string maxShardSize = "2GB",
        [Option("cfg-options", Description = "override config keys, as for train")] string[]? cfgOptions = null)
    {
        var cfg = Builtins.LoadConfig(config, cfgOptions);
        // XTuner's checkpoints are iter_N.pth; ours are iter_N folders.
        if (!Directory.Exists(checkpoint) && checkpoint.EndsWith(".pth", StringComparison.Ordinal) && Directory.Exists(checkpoint[..^4]))
            checkpoint = checkpoint[..^4];
        if (!File.Exists(Path.Combine(checkpoint, "state.json")))
            throw new FileNotFoundException($"{checkpoint}: not a checkpoint folder (no state.json); pass work_dir/iter_N");
        var state = Checkpoint.ReadState(checkpoint);
        if ((state.Lora is null) != (cfg.Lora is null))
            throw new ArgumentException($"{checkpoint} holds {(state.Lora is null ? "full fine-tuning" : "LoRA")} weights but {config} configures " +
                $"{(cfg.Lora is null ? "full fine-tuning" : "LoRA")}");
        if (Path.GetFullPath(state.Model) != Path.GetFullPath(cfg.PretrainedModelNameOrPath))
            Console.Error.WriteLine($"note: {checkpoint} was trained on {state.Model}, {config} names {cfg.PretrainedModelNameOrPath}; " +
                "the output names the model it was trained on");
        Console.WriteLine($"Load PTH model from {checkpoint}");
        if (!fp32) Console.WriteLine("Convert LLM to float16");
        long shard = CliPaths.Size("max-shard-size", maxShardSize);
        Console.WriteLine(state.Lora is null ? $"Saving LLM to {saveDir}" : $"Saving adapter to {saveDir}");
        return Interruptible(saveDir, () =>
        {
            Console.WriteLine(CheckpointExport.Run(checkpoint, saveDir, fp32 ? DType.F32 : DType.F16, shard));
            Console.WriteLine("All done!");
        });
    }

    [Command("merge", Description = "Merge a PEFT LoRA adapter into its base model, shard by shard, into a new HF model folder")]
    public int Merge([Argument(Description = "base model folder")] string baseModel, [Argument(Description = "PEFT adapter folder")] string adapter,
        [Argument(Description = "output folder")] string output,
        [Option("max-shard-size", Description = "largest shard, e.g. 2GB or 500MB (default 2GB)")] string maxShardSize = "2GB",
        [Option("dtype", Description = "float32, bfloat16 or float16 (default: the base's torch_dtype, else float32)")] string? dtype = null,
        [Option("device", Description = "cpu (the merge streams on the CPU)")] string device = "cpu")
    {
        if (device != "cpu") throw new ArgumentException($"--device {device}: the merge runs on the CPU, one tensor at a time");
        long shardBytes = CliPaths.Size("max-shard-size", maxShardSize);
        var outType = dtype is null ? ModelConfig.Load(baseModel).TorchDtype ?? DType.F32 : ParseDtype(dtype);
        return Interruptible(output, () =>
        {
            var summary = IlgpuTune.Model.Merge.Run(baseModel, adapter, output, shardBytes, outType);
            Console.WriteLine($"merged LoRA into {summary.MergedModules.Count} modules -> {output} ({summary.Files.Count} files, {outType})");
        });
    }

    [Command("quantize", Description = "Quantize a model's decoder linear weights to 4 bits and save the folder as transformers saves a " +
        "bitsandbytes 4-bit model (NF4 or FP4, blocks of 64, double quantization by default); train on it with LoRA (QLoRA)")]
    public int Quantize([Argument(Description = "model folder")] string baseModel, [Argument(Description = "output folder")] string output,
        [Option("quant-type", Description = "nf4 or fp4 (default nf4)")] string quantType = "nf4",
        [Option("no-double-quant", Description = "keep the absmax in fp32 instead of 8 bits")] bool noDoubleQuant = false,
        [Option("max-shard-size", Description = "largest shard, e.g. 2GB or 500MB (default 2GB)")] string maxShardSize = "2GB")
    {
        long shard = CliPaths.Size("max-shard-size", maxShardSize);
        return Interruptible(output, () =>
        {
            var files = QuantizedExport.Run(baseModel, output, shard, quantType, !noDoubleQuant);
            Console.WriteLine($"quantized to {quantType}{(noDoubleQuant ? "" : " (double quant)")} -> {output} ({files.Count} files)");
        });
    }

    /// <summary>
    /// Runs a conversion that writes <paramref name="output"/> with AtomicDirectory. Ctrl-C / SIGTERM removes its temp
    /// folder and ends the process (exit 130 / 143): no partial output is left, and the old output, if any, stays.
    /// </summary>
    private static int Interruptible(string output, Action convert)
    {
        using var exiting = new ManualResetEventSlim();
        using var signals = new Signals(signal =>
        {
            exiting.Set();
            AtomicDirectory.RemoveOwn(output);
            Environment.Exit(Signals.ExitCode(signal));
            return true;
        });
        try
        {
            convert();
        }
        catch when (exiting.IsSet)
        {
            Thread.Sleep(Timeout.Infinite); // the writer failed because its temp folder was removed: the process is exiting
        }
        return 0;
    }

    internal static DType ParseDtype(string s) =>
        DTypeInfo.FromTorchName(s) ?? throw new ArgumentException($"--dtype '{s}': expected float32, bfloat16 or float16");
}
