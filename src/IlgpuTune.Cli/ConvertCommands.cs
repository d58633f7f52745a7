using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Training;

namespace IlgpuTune.Cli;

public sealed class ConvertCommands
{
    [Command("adapter", Description = "A training checkpoint (work_dir/iter_N) as a PEFT adapter folder (LoRA) or a full HF model folder")]
    public int Adapter([Argument(Description = "checkpoint folder")] string checkpoint, [Argument(Description = "output folder")] string output,
        [Option("dtype", Description = "float32, bfloat16 or float16 (default float32)")] string dtype = "float32")
    {
        Console.WriteLine(CheckpointExport.Run(checkpoint, output, ParseDtype(dtype)));
        return 0;
    }

    internal static DType ParseDtype(string s) =>
        DTypeInfo.FromTorchName(s) ?? throw new ArgumentException($"--dtype '{s}': expected float32, bfloat16 or float16");
}
