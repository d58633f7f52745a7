// `train --deepspeed deepspeed_zero2|...|FILE.json` as XTuner accepts it. ZeRO shards optimizer state / gradients /
// parameters across GPUs: with several ranks stage 1 shards AdamW's state and stage 2 the gradients too
// (DistributedOptimizer); stage 3 (parameters) runs as stage 2. With one GPU there is nothing to shard. The offloads
// move state to host memory, which our paged optimizer does for AdamW's state. Explicit numbers in a JSON file override
// the config as XTuner's train.py lets them.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuTune.Training.Configs;

public static class DeepSpeed
{
    public static readonly string[] BuiltinNames =
        ["deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero2_offload", "deepspeed_zero3", "deepspeed_zero3_offload"];

    /// <summary>--cfg-options to apply and one line saying what the DeepSpeed config maps to on one GPU.</summary>
    public static (List<string> Overrides, string Message) Map(string value)
    {
        var plan = Plan(value, 1);
        return (plan.Overrides, plan.Message);
    }

    /// <summary>What the DeepSpeed config means for a job of <paramref name="worldSize"/> ranks: overrides, one line, the ZeRO stage to run.</summary>
    public static DeepSpeedPlan Plan(string value, int worldSize)
    {
        JsonObject ds;
        string name = value;
        if (File.Exists(value))
        {
            try
            {
                ds = JsonNode.Parse(File.ReadAllText(value)) as JsonObject ?? throw new ConfigException($"{value}: expected a JSON object (a DeepSpeed config)");
            }
            catch (JsonException e)
            {
                throw new ConfigException($"{value}: not valid JSON ({e.Message})");
            }
        }
        else
        {
            name = value.StartsWith("deepspeed_", StringComparison.Ordinal) ? value : "deepspeed_" + value;
            if (!BuiltinNames.Contains(name))
                throw new ConfigException($"--deepspeed {value}: expected {string.Join(", ", BuiltinNames)} or a DeepSpeed JSON file");
            int stage = name[14] - '0';
            bool offload = name.EndsWith("_offload", StringComparison.Ordinal);
            ds = new JsonObject { ["zero_optimization"] = new JsonObject { ["stage"] = stage } };
            if (offload) ds["zero_optimization"]!["offload_optimizer"] = new JsonObject { ["device"] = "cpu" };
            if (offload && stage == 3) ds["zero_optimization"]!["offload_param"] = new JsonObject { ["device"] = "cpu" };
        }

        var overrides = new List<string>();
        var said = new List<string>();
        var zero = ds["zero_optimization"] as JsonObject;
        int zeroStage = zero?["stage"] is JsonValue sv && sv.TryGetValue(out int st) ? st : 0;
        if (zeroStage is < 0 or > 3) throw new ConfigException($"{name}: zero_optimization.stage {zeroStage}: expected 0 to 3");
        int runStage = Math.Min(zeroStage, 2);
        said.Add(worldSize == 1 ? $"ZeRO stage {zeroStage} shards state across GPUs; with one GPU there is nothing to shard"
            : runStage switch
            {
                0 => $"ZeRO stage 0: gradients all-reduced over the {worldSize} GPUs",
                1 => $"ZeRO stage 1: AdamW state sharded over the {worldSize} GPUs",
                _ => $"ZeRO stage {zeroStage}: AdamW state and gradients sharded over the {worldSize} GPUs" +
                    (zeroStage == 3 ? " (runs as stage 2: parameters are not sharded)" : ""),
            });
        string? Device(string key) => zero?[key]?["device"]?.GetValue<string>();
        switch (Device("offload_optimizer"))
        {
            case null or "none": break;
            case "cpu":
                overrides.Add("paged_optimizer=true");
                said.Add("optimizer offload -> paged_optimizer (AdamW state in page-locked host memory, paged to the GPU for each update)");
                break;
            case var d: throw new ConfigException($"{name}: offload_optimizer device '{d}' is not supported (cpu or none)");
        }
        switch (Device("offload_param"))
        {
            case null or "none": break;
            case "cpu": said.Add("parameter offload: parameters stay on the GPU (a 4-bit base, quantization: nf4, is the memory saver here)"); break;
            case var d: throw new ConfigException($"{name}: offload_param device '{d}' is not supported (cpu or none)");
        }
        bool Enabled(string key) => ds[key]?["enabled"] is JsonValue v && v.TryGetValue(out bool b) && b;
        if (Enabled("fp16") && Enabled("bf16")) throw new ConfigException($"{name}: fp16 and bf16 are both enabled");
        if (Enabled("fp16")) { overrides.Add("dtype=float16"); said.Add("fp16 -> dtype float16"); }
        if (Enabled("bf16")) { overrides.Add("dtype=bfloat16"); said.Add("bf16 -> dtype bfloat16"); }
        void Number(string key, string ours)
        {
            if (ds[key] is JsonValue v && v.TryGetValue(out double d))
            {
                overrides.Add(FormattableString.Invariant($"{ours}={d}"));
                said.Add(FormattableString.Invariant($"{key} {d} -> {ours}"));
            }
        }
        Number("train_micro_batch_size_per_gpu", "batch_size");
        Number("gradient_accumulation_steps", "accumulative_counts");
        Number("gradient_clipping", "max_norm");
        return new DeepSpeedPlan(overrides, $"--deepspeed {name}: {string.Join("; ", said)}", worldSize == 1 ? 0 : runStage);
    }
}

/// <param name="ZeroStage">The stage the job runs: 0 (all-reduce), 1 or 2; 0 with one rank.</param>
public sealed record DeepSpeedPlan(List<string> Overrides, string Message, int ZeroStage);
