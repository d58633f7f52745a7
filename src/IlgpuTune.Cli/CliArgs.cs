using Cocona;

namespace IlgpuTune.Cli;

internal static class CliArgs
{
    /// <summary>
    /// XTuner's argument forms, in Cocona's terms: `--resume` with no path means the latest checkpoint, and
    /// `--cfg-options a=1 b=2` (several values after one flag) becomes `--cfg-options a=1 --cfg-options b=2`.
    /// </summary>
    public static string[] Normalize(string[] args)
    {
        var list = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            list.Add(args[i]);
            if (args[i] == "--resume" && (i + 1 == args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal)))
                list.Add("latest");
            else if (args[i] == "--cfg-options")
                for (int first = i + 1; i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal); i++)
                {
                    if (i + 1 > first) list.Add("--cfg-options");
                    list.Add(args[i + 1]);
                }
        }
        return [.. list];
    }
}
