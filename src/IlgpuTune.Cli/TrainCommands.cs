using Cocona;
using Spectre.Console;
using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
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
        [Option("cfg-options", Description = "override config keys: key=value (YAML values; lora.r=16)")] string[]? cfgOptions = null,
        [Option("profile", Description = "diagnosis: after N iterations, time every kernel launch and log where a step goes (slows those iterations)")] int? profile = null)
    {
        var overrides = (cfgOptions ?? []).ToList();
        if (seed is { } s) overrides.Add($"seed={s}");
        var cfg = Builtins.LoadConfig(config, overrides);
        var options = new TrainOptions { WorkDir = workDir, Resume = resume is null ? null : resume == "latest" ? "" : resume, ProfileAfter = profile };
        TrainResult result;
        if (Console.IsOutputRedirected) result = Trainer.Run(cfg, options);
        else
        {
            // On a terminal: log lines scroll above a live progress bar (Spectre.Console).
            result = AnsiConsole.Progress().AutoClear(true).HideCompleted(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("train", autoStart: true, maxValue: 1);
                    return Trainer.Run(cfg, options with
                    {
                        Console = WriteAboveProgress,
                        Progress = (done, max) =>
                        {
                            task.MaxValue = max;
                            task.Value = done;
                            task.Description = $"train {done}/{max}";
                        },
                    });
                });
        }
        var first = result.Log.FirstOrDefault();
        var last = result.Log.LastOrDefault();
        if (first is not null && last is not null)
            Console.WriteLine($"loss {first.Loss:F4} (iter {first.Iter}) -> {last.Loss:F4} (iter {last.Iter}); curve: {Path.Combine(result.WorkDir, "curve.svg")}");
        if (result.AdapterDir is not null) Console.WriteLine($"adapter: {result.AdapterDir}");
        return 0;
    }

    // The live display redraws correctly only over whole lines that fit the terminal: split the text into lines and fold
    // long ones ourselves.
    private static void WriteAboveProgress(string text)
    {
        int width = Math.Max(20, AnsiConsole.Profile.Width - 1);
        foreach (var line in text.Split('\n'))
            for (int i = 0; i == 0 || i < line.Length; i += width)
                AnsiConsole.WriteLine(line.Substring(i, Math.Min(width, line.Length - i)));
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
