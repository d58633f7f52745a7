using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Training;

namespace IlgpuTune.Cli;

[HasSubCommands(typeof(ConvertCommands), "convert", Description = "Convert checkpoints and adapters")]
[FriendlyErrors]
public sealed class TrainCommands
{
    [Command("train", Description = "Train with a config: a YAML file or a built-in config name (see list-cfg)")]
    public int Train(
        [Argument(Description = "config file or built-in config name")] string config,
        [Option("work-dir", Description = "where logs, checkpoints, the adapter and curve.svg go (default work_dirs/<config>)")] string? workDir = null,
        [Option("resume", Description = "continue from a checkpoint folder, or 'latest' for the newest in the work dir")] string? resume = null,
        [Option("seed", Description = "override the config's seed")] int? seed = null,
        [Option("cfg-options", Description = "override config keys: key=value (YAML values; lora.r=16)")] string[]? cfgOptions = null)
    {
        var overrides = (cfgOptions ?? []).ToList();
        if (seed is { } s) overrides.Add($"seed={s}");
        var cfg = Builtins.LoadConfig(config, overrides);
        var result = Trainer.Run(cfg, new TrainOptions { WorkDir = workDir, Resume = resume is null ? null : resume == "latest" ? "" : resume });
        var first = result.Log.FirstOrDefault();
        var last = result.Log.LastOrDefault();
        if (first is not null && last is not null)
            Console.WriteLine($"loss {first.Loss:F4} (iter {first.Iter}) -> {last.Loss:F4} (iter {last.Iter}); curve: {Path.Combine(result.WorkDir, "curve.svg")}");
        if (result.AdapterDir is not null) Console.WriteLine($"adapter: {result.AdapterDir}");
        return 0;
    }

    [Command("list-cfg", Description = "List the built-in configs")]
    public void ListCfg([Option('p', Description = "only names containing this pattern")] string? pattern = null)
    {
        foreach (var name in Builtins.ConfigNames.Where(n => pattern is null || n.Contains(pattern, StringComparison.OrdinalIgnoreCase)))
            Console.WriteLine(name);
    }

    [Command("copy-cfg", Description = "Copy a built-in config into a folder to edit it")]
    public int CopyCfg([Argument] string name, [Argument] string dir)
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, name + "_copy.yaml");
        AtomicFile.WriteAllText(path, Builtins.ConfigText(name));
        Console.WriteLine($"Copy to {path}");
        return 0;
    }
}
