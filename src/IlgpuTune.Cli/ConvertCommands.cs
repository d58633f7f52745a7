using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
using IlgpuTune.Training;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed class ConvertCommands
{
    [Command("adapter", Description = "A training checkpoint (work_dir/iter_N) as a PEFT adapter folder (LoRA) or a full HF model folder")]
    public int Adapter([Argument(Description = "checkpoint folder")] string checkpoint, [Argument(Description = "output folder")] string output,
        [Option("dtype", Description = "float32, bfloat16 or float16 (default float32)")] string dtype = "float32")
    {
        Console.WriteLine(CheckpointExport.Run(checkpoint, output, ParseDtype(dtype)));
        return 0;
    }

    [Command("merge", Description = "Merge a PEFT LoRA adapter into its base model, shard by shard, into a new HF model folder")]
    public int Merge([Argument(Description = "base model folder")] string baseModel, [Argument(Description = "PEFT adapter folder")] string adapter,
        [Argument(Description = "output folder")] string output,
        [Option("max-shard-size", Description = "largest shard, e.g. 2GB or 500MB (default 2GB)")] string maxShardSize = "2GB",
        [Option("dtype", Description = "float32, bfloat16 or float16 (default: the base's torch_dtype, else float32)")] string? dtype = null,
        [Option("device", Description = "cpu (the merge streams on the CPU)")] string device = "cpu")
    {
        if (device != "cpu") throw new ArgumentException($"--device {device}: the merge runs on the CPU, one tensor at a time");
        var outType = dtype is null ? ModelConfig.Load(baseModel).TorchDtype ?? DType.F32 : ParseDtype(dtype);
        var summary = IlgpuTune.Model.Merge.Run(baseModel, adapter, output, IlgpuTune.IO.SafetensorsWriter.ParseSize(maxShardSize), outType);
        Console.WriteLine($"merged LoRA into {summary.MergedModules.Count} modules -> {output} ({summary.Files.Count} files, {outType})");
        return 0;
    }

    [Command("quantize", Description = "Quantize a model's decoder linear weights to 4 bits and save the folder as transformers saves a " +
        "bitsandbytes 4-bit model (NF4 or FP4, blocks of 64, double quantization by default); train on it with LoRA (QLoRA)")]
    public int Quantize([Argument(Description = "model folder")] string baseModel, [Argument(Description = "output folder")] string output,
        [Option("quant-type", Description = "nf4 or fp4 (default nf4)")] string quantType = "nf4",
        [Option("no-double-quant", Description = "keep the absmax in fp32 instead of 8 bits")] bool noDoubleQuant = false,
        [Option("max-shard-size", Description = "largest shard, e.g. 2GB or 500MB (default 2GB)")] string maxShardSize = "2GB")
    {
        var files = QuantizedExport.Run(baseModel, output, IlgpuTune.IO.SafetensorsWriter.ParseSize(maxShardSize), quantType, !noDoubleQuant);
        Console.WriteLine($"quantized to {quantType}{(noDoubleQuant ? "" : " (double quant)")} -> {output} ({files.Count} files)");
        return 0;
    }

    internal static DType ParseDtype(string s) =>
        DTypeInfo.FromTorchName(s) ?? throw new ArgumentException($"--dtype '{s}': expected float32, bfloat16 or float16");
}
