using System.Runtime.InteropServices;
using Cocona;
using Spectre.Console;
using IlgpuTune.Core;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
using IlgpuTune.Training;
using IlgpuTune.Distributed;

namespace IlgpuTune.Cli;

[HasSubCommands(typeof(ConvertCommands), "convert", Description = "Convert checkpoints and adapters")]
[FriendlyErrors]
public sealed class TrainCommands
{
    [Command("train", Description = "Train with a config: a YAML file, an XTuner .py config (read, not run) or a built-in config name " +
        "(see list-cfg). Ctrl-C or SIGTERM stops after the current step and saves a checkpoint to resume from (a second Ctrl-C stops at once)")]
    public int Train(
        [Argument(Description = "config file or built-in config name")] string config,
        [Option("work-dir", Description = "where checkpoints, the adapter and each launch's log folder (YYYYmmdd_HHMMSS/) go (default work_dirs/<config>)")] string? workDir = null,
        [Option("resume", Description = "continue from a checkpoint folder, or 'latest' for the newest in the work dir")] string? resume = null,
        [Option("overwrite", Description = "start over in a work dir that holds another run's checkpoints, deleting them (logs stay)")] bool overwrite = false,
        [Option("seed", Description = "override the config's seed")] int? seed = null,
        [Option("cfg-options", Description = "override config keys: key=value (YAML values; lora.r=16); a .py config also takes XTuner's dotted keys (train_dataloader.batch_size=2)")] string[]? cfgOptions = null,
        [Option("profile", Description = "diagnosis: after N iterations, time every kernel launch and log where a step goes (slows those iterations)")] int? profile = null,
        [Option("deepspeed", Description = "XTuner's deepspeed_zero1|zero2|zero2_offload|zero3|zero3_offload or a DeepSpeed JSON: ZeRO-1/2 on several GPUs (zero3 runs as zero2), offload -> paged optimizer")] string? deepspeed = null,
        [Option("launcher", Description = "XTuner's job launcher: none (this command; --nproc / NPROC_PER_NODE start one process per GPU), pytorch (under torchrun) or slurm (under srun)")] string launcher = "none",
        [Option("nproc", Description = "processes on this node, one per GPU (as NPROC_PER_NODE); needs NVIDIA's NCCL")] int? nproc = null)
    {
        if (overwrite && resume is not null) throw new ArgumentException("give --resume or --overwrite, not both");
        var launch = LaunchEnv.From(launcher, Environment.GetEnvironmentVariable);
        int world = DistributedLaunch.ProcessesPerNode(nproc) is > 1 and var perNode && !launch.IsMultiProcess
            ? perNode * (int.TryParse(Environment.GetEnvironmentVariable("NNODES"), out int nodes) && nodes > 0 ? nodes : 1) : launch.WorldSize;
        var overrides = new List<string>();
        string? deepspeedNote = null;
        int zeroStage = 0;
        if (deepspeed is not null)
        {
            var plan = IlgpuTune.Training.Configs.DeepSpeed.Plan(deepspeed, world);
            (overrides, deepspeedNote, zeroStage) = (plan.Overrides, plan.Message, plan.ZeroStage);
        }
        overrides.AddRange(cfgOptions ?? []);
        if (seed is { } s) overrides.Add($"seed={s}");
        var cfg = Builtins.LoadConfig(config, overrides);
        // Several GPUs asked for here: start the ranks (each runs this command again) once the config checks out.
        if (DistributedLaunch.RunRanksIfAsked(nproc, launcher) is { } jobCode) return jobCode;
        bool talk = launch.Rank == 0; // only rank 0 prints
        if (talk)
            foreach (var note in cfg.Notes.Prepend(deepspeedNote).OfType<string>()) Console.WriteLine($"note: {note}");
        var (_, communicator) = DistributedLaunch.JoinRanks(launcher);
        using var ownedCommunicator = communicator;
        using var stop = new StopSignal();
        var options = new TrainOptions
        {
            WorkDir = workDir, Resume = resume is null ? null : resume == "latest" ? "" : resume, Overwrite = overwrite, ProfileAfter = profile,
            Stop = stop.Token, ConfigOverrides = overrides, Communicator = communicator, ZeroStage = zeroStage, LocalRank = launch.LocalRank,
        };
        TrainResult result;
        try
        {
            result = Console.IsOutputRedirected || !talk ? Trainer.Run(cfg, options) : RunWithProgress(cfg, options);
        }
        catch (TrainingStoppedException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        if (!talk) return result.Interrupted ? Signals.ExitCode(stop.Received ?? PosixSignal.SIGINT) : 0;
        string again = $"ilgpu-tune train {Quote(config)} --work-dir {Quote(result.WorkDir)} --resume" +
            (deepspeed is null ? "" : $" --deepspeed {Quote(deepspeed)}") + (cfgOptions is { Length: > 0 } ? " --cfg-options " + string.Join(' ', cfgOptions.Select(o => Quote(o))) : "") + (seed is null ? "" : $" --seed {seed}");
        if (result.Interrupted)
        {
            Console.Error.WriteLine(result.LastCheckpoint is null
                ? $"interrupted ({stop.Received}) before the first iteration; nothing to resume"
                : $"interrupted ({stop.Received}) at iteration {result.Done}/{result.Iterations}; checkpoint {result.LastCheckpoint}\nresume with: {again}");
            return Signals.ExitCode(stop.Received ?? PosixSignal.SIGINT);
        }
        var first = result.Log.FirstOrDefault();
        var last = result.Log.LastOrDefault();
        if (first is not null && last is not null)
            Console.WriteLine($"loss {first.Loss:F4} (iter {first.Iter}) -> {last.Loss:F4} (iter {last.Iter}); log and curve: {result.RunDir}");
        if (result.Done < result.Iterations)
        {
            if (result.LastCheckpoint is not null) Console.WriteLine($"stopped at iteration {result.Done}/{result.Iterations}; resume with: {again}");
            return 0;
        }
        foreach (var line in NextCommands(cfg, result)) Console.WriteLine(line);
        return 0;
    }

    private static TrainResult RunWithProgress(TrainConfig cfg, TrainOptions options) =>
        // On a terminal: log lines scroll above a live progress bar (Spectre.Console).
        AnsiConsole.Progress().AutoClear(true).HideCompleted(false)
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

    /// <summary>What to run next, with this run's paths: export, merge, chat (XTuner's pth_to_hf -> merge -> chat).</summary>
    internal static List<string> NextCommands(TrainConfig cfg, TrainResult result)
    {
        string model = Quote(Path.GetFullPath(cfg.PretrainedModelNameOrPath));
        string template = (IlgpuTune.Data.Templates.XtunerTemplates.Prompt.ContainsKey(cfg.PromptTemplate) ? $" --prompt-template {cfg.PromptTemplate}" : "") +
            (cfg.SystemTemplate is { } st ? $" --system-template {st}" : cfg.System is { } sys ? $" --system {Quote(sys, always: true)}" : "");
        string ckpt = Quote(result.LastCheckpoint!);
        var lines = new List<string> { "next:" };
        if (result.AdapterDir is { } adapter)
        {
            string merged = Quote(Path.Combine(result.WorkDir, "merged"));
            lines.Add($"  adapter (PEFT, written): {adapter}   (again from a checkpoint: ilgpu-tune convert adapter {ckpt} {Quote(Path.Combine(result.WorkDir, "hf_adapter"))})");
            lines.Add($"  chat with it:  ilgpu-tune chat {model} --adapter {Quote(adapter)}{template}");
            lines.Add($"  merge it:      ilgpu-tune convert merge {model} {Quote(adapter)} {merged}");
            lines.Add($"  chat merged:   ilgpu-tune chat {merged}{template}");
        }
        else
        {
            string hf = Quote(Path.Combine(result.WorkDir, "hf"));
            lines.Add($"  export to HF:  ilgpu-tune convert adapter {ckpt} {hf}");
            lines.Add($"  chat with it:  ilgpu-tune chat {hf}{template}");
        }
        return lines;
    }

    // For a POSIX shell: single quotes when needed.
    private static string Quote(string text, bool always = false) =>
        always || text.Length == 0 || text.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '/' or '.' or '_' or '-' or ':' or '@' or '+' or ','))
            ? $"'{text.Replace("'", "'\\''")}'" : text;

    // The live display redraws correctly only over whole lines that fit the terminal: split the text into lines and fold
    // long ones ourselves.
    private static void WriteAboveProgress(string text)
    {
        int width = Math.Max(20, AnsiConsole.Profile.Width - 1);
        foreach (var line in text.Split('\n'))
            for (int i = 0; i == 0 || i < line.Length; i += width)
                AnsiConsole.WriteLine(line.Substring(i, Math.Min(width, line.Length - i)));
    }

    [Command("list-cfg", Description = "List the built-in configs (as xtuner list-cfg)")]
    public void ListCfg([Option("pattern", ['p'], Description = "only names containing this text (case-insensitive)")] string? pattern = null)
    {
        Console.WriteLine("==========================CONFIGS===========================");
        if (pattern is not null)
        {
            Console.WriteLine($"PATTERN: {pattern}");
            Console.WriteLine("-------------------------------");
        }
        foreach (var name in Builtins.ConfigNames.Where(n => pattern is null || n.Contains(pattern, StringComparison.OrdinalIgnoreCase)))
            Console.WriteLine(name);
        Console.WriteLine("=============================================================");
    }

    [Command("copy-cfg", Description = "Copy a built-in config into a folder to edit it: NAME_copy.yaml, or with --format py an XTuner .py config")]
    public int CopyCfg([Argument(Description = "built-in config name (list-cfg)")] string name, [Argument(Description = "folder to write it into")] string dir,
        [Option("format", Description = "yaml (default) or py (XTuner's Python config layout; train reads it back unchanged)")] string format = "yaml")
    {
        string text = format switch
        {
            "yaml" => Builtins.ConfigText(name),
            "py" => IlgpuTune.Training.Configs.XtunerPyWriter.Write(TrainConfig.Parse(Builtins.ConfigText(name), name + ".yaml"), name),
            _ => throw new ArgumentException($"--format {format}: expected yaml or py"),
        };
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, $"{name}_copy.{format}");
        AtomicFile.WriteAllText(path, text);
        Console.WriteLine($"Copy to {path}");
        return 0;
    }
}
