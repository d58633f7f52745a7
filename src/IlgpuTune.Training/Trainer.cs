// The training loop of `ilgpu-tune train`, as XTuner/mmengine run it: micro-batches of packed rows, loss / k gradient
// accumulation, LR warmup + cosine stepped per micro-batch, unscale -> clip -> AdamW -> scaler update at the end of each
// window, logs every logging_steps, checkpoints every save_steps and at the end. Everything random derives from the seed
// and the iteration number, so a run resumed from a checkpoint continues exactly as the uninterrupted run would.
using System.Diagnostics;
using System.Text.Json;
using IlgpuTune.Core;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;

namespace IlgpuTune.Training;

public sealed record TrainOptions
{
    public string? WorkDir { get; init; }
    /// <summary>null: start fresh; "": the latest checkpoint in the work dir; else a checkpoint folder.</summary>
    public string? Resume { get; init; }
    public Action<string> Console { get; init; } = System.Console.WriteLine;
    /// <summary>Stop (as if killed) after this many iterations of this process; for tests of resume.</summary>
    public int? StopAfter { get; init; }
}

public sealed record TrainResult(string WorkDir, int Iterations, IReadOnlyList<LogRecord> Log, string? AdapterDir);

public static class Trainer
{
    public static TrainResult Run(TrainConfig cfg, TrainOptions options)
    {
        string workDir = Path.GetFullPath(options.WorkDir ?? cfg.WorkDir
            ?? Path.Combine("work_dirs", Path.GetFileNameWithoutExtension(cfg.Source)));
        Directory.CreateDirectory(workDir);
        string? resumeDir = options.Resume is null ? null : Checkpoint.Resolve(workDir, options.Resume.Length == 0 ? null : options.Resume);
        var resumeState = resumeDir is null ? null : Checkpoint.ReadState(resumeDir);
        using var log = new TrainLog(workDir, options.Console, resumeState?.Iter);

        using var device = Device.Create(cfg.Device);
        log.Info($"device: {device}");
        string modelDir = cfg.PretrainedModelNameOrPath;
        string tokenizerDir = cfg.Tokenizer ?? modelDir;
        var tokenizer = HfTokenizer.FromDirectory(tokenizerDir);
        var modelConfig = ModelConfig.Load(modelDir);
        var template = ResolveTemplate(cfg.PromptTemplate, modelConfig);
        var tokenizerFiles = new[] { "tokenizer.json", "tokenizer_config.json" }.Select(f => Path.Combine(tokenizerDir, f)).Where(File.Exists).ToList();
        using var data = TrainingData.Prepare(cfg, tokenizer, template, tokenizerFiles, Path.Combine(workDir, "cache"), log.Info);

        using var model = ModelLoader.Load(modelDir, device);
        if (cfg.Quantization != "none") throw new NotSupportedException($"quantization '{cfg.Quantization}' (QLoRA) is not available yet; use none");
        if (cfg.Lora is { } l)
        {
            var targets = l.TargetModules ?? model.Linears.Select(m => m.Name[(m.Name.LastIndexOf('.') + 1)..]).Distinct().ToList();
            model.ApplyLora(new LoraConfig(l.R, (float)l.LoraAlpha, (float)l.LoraDropout, targets, l.UseRslora), cfg.Seed);
        }
        else model.SetFullFineTuning();
        model.GradientCheckpointing = cfg.GradientCheckpointing;
        var trainable = model.TrainableParameters.ToList();
        var loraState = cfg.Lora is { } ls ? new System.Text.Json.Nodes.JsonObject
        {
            ["r"] = ls.R, ["lora_alpha"] = ls.LoraAlpha, ["lora_dropout"] = ls.LoraDropout, ["use_rslora"] = ls.UseRslora,
            ["modules"] = new System.Text.Json.Nodes.JsonArray(model.Linears.Where(m => m.Lora is not null)
                .Select(m => (System.Text.Json.Nodes.JsonNode)m.Name).ToArray()),
        } : null;
        log.Info($"model: {modelConfig.Architecture} {modelDir}; trainable {trainable.Sum(t => t.Length):N0} of " +
            $"{model.Parameters.Values.Sum(t => t.Length) + (cfg.Lora is null ? 0 : trainable.Sum(t => t.Length)):N0} parameters" +
            (cfg.Lora is { } lo ? $" (LoRA r={lo.R}, alpha={lo.LoraAlpha})" : " (full fine-tuning)"));

        int rows = data.RowCount;
        int itersPerEpoch = (rows + cfg.BatchSize - 1) / cfg.BatchSize;
        int maxIters = cfg.MaxIters ?? cfg.MaxEpochs * itersPerEpoch;
        var schedule = cfg.MaxIters is null
            ? LrSchedule.Xtuner(cfg.Lr, cfg.WarmupRatio, cfg.MaxEpochs, itersPerEpoch)
            : new LrSchedule(cfg.Lr, (int)(cfg.WarmupRatio * maxIters), maxIters);
        var plan = new AccumulationPlan(maxIters, cfg.AccumulativeCounts);
        using var optimizer = new AdamW(trainable, cfg.Lr, cfg.Betas[0], cfg.Betas[1], 1e-8, cfg.WeightDecay, cfg.PagedOptimizer);
        var scaler = new GradScaler(enabled: cfg.Dtype == "float16");
        int start = 0, steps = 0;
        if (resumeDir is not null)
        {
            Checkpoint.LoadTrainable(resumeDir, trainable);
            optimizer.LoadState(Checkpoint.ReadOptimizer(resumeDir));
            if (resumeState!.Scaler.Count > 0)
                scaler.LoadState(resumeState.Scaler.Deserialize<GradScalerState>() ?? throw new InvalidDataException($"{resumeDir}: bad scaler state"));
            (start, steps) = (resumeState!.Iter, resumeState.OptimizerSteps);
            log.Info($"resumed from {resumeDir} at iteration {start}");
        }
        log.Info($"{rows} rows, batch {cfg.BatchSize}, {itersPerEpoch} iterations per epoch, {maxIters} iterations, " +
            $"accumulative_counts {cfg.AccumulativeCounts}, lr {cfg.Lr}, work_dir {workDir}");

        var sw = Stopwatch.StartNew();
        double windowLoss = 0, windowTime = 0, windowData = 0;
        long windowTokens = 0;
        int windowCount = 0;
        float? lastNorm = resumeState?.LastGradNorm;
        int[]? order = null;
        int orderEpoch = -1;
        for (int iter = start; iter < maxIters; iter++)
        {
            if (options.StopAfter is { } stop && iter - start >= stop) break;
            var t0 = sw.Elapsed;
            int epoch = iter / itersPerEpoch;
            if (epoch != orderEpoch) (order, orderEpoch) = (EpochOrder(rows, cfg.Seed, epoch), epoch);
            var batch = Batch.Assemble(data, order!, (iter % itersPerEpoch) * cfg.BatchSize, cfg.BatchSize);
            var t1 = sw.Elapsed;

            float lr = (float)schedule.LrAt(iter);
            float loss;
            using (var tape = new Tape())
            {
                using var lossTensor = model.Loss(batch.InputIds, batch.Labels, batch.Size, batch.Length,
                    batch.PositionIds, batch.SegmentIds, new Random(unchecked(cfg.Seed * 1_000_003 + iter)));
                loss = lossTensor.Item();
                if (lossTensor.RequiresGrad) tape.Backward(lossTensor, scaler.Scale / plan.LossDivisor(iter));
            }
            if (plan.EndsStep(iter))
            {
                // mmengine's order: unscale -> clip -> step (skipped on inf/NaN) -> scaler update.
                scaler.Unscale(optimizer);
                lastNorm = cfg.MaxNorm > 0 ? GradClipping.ClipGradNorm(trainable, (float)cfg.MaxNorm) : GradClipping.GradNorm(trainable);
                optimizer.Lr = lr;
                if (scaler.Step(optimizer)) steps++;
                scaler.Update();
                optimizer.ZeroGrad();
            }

            var t2 = sw.Elapsed;
            windowLoss += loss;
            windowTime += (t2 - t0).TotalSeconds;
            windowData += (t1 - t0).TotalSeconds;
            windowTokens += batch.Tokens;
            windowCount++;
            int done = iter + 1;
            if (done % cfg.LoggingSteps == 0 || done == maxIters)
            {
                double perIter = windowTime / windowCount;
                log.Iteration(new LogRecord(done, maxIters, lr, windowLoss / windowCount, lastNorm, perIter, windowData / windowCount,
                    device.Allocator.PeakAllocatedBytes / 1048576.0, windowTokens / Math.Max(windowTime, 1e-9),
                    TimeSpan.FromSeconds(perIter * (maxIters - done))));
                (windowLoss, windowTime, windowData, windowTokens, windowCount) = (0, 0, 0, 0, 0);
            }
            if (done % cfg.SaveSteps == 0 || done == maxIters)
            {
                Checkpoint.Save(workDir, new CheckpointState(done, steps, cfg.Seed,
                        scaler.Enabled ? (System.Text.Json.Nodes.JsonObject)System.Text.Json.JsonSerializer.SerializeToNode(scaler.ExportState())! : [],
                        cfg.Source, Path.GetFullPath(modelDir), loraState, lastNorm),
                    trainable, optimizer.ExportState(), cfg.SaveTotalLimit);
                log.Info($"saved checkpoint {Checkpoint.DirFor(workDir, done)}");
            }
        }
        log.WriteCurve();

        string? adapterDir = null;
        if (cfg.Lora is not null && Checkpoint.List(workDir).LastOrDefault().Iter == maxIters)
        {
            adapterDir = Path.Combine(workDir, "adapter");
            PeftAdapter.Save(adapterDir, model, Path.GetFullPath(modelDir));
            log.Info($"adapter written to {adapterDir}");
        }
        return new TrainResult(workDir, maxIters, log.Records, adapterDir);
    }

    /// <summary>The template a config names; "auto" picks XTuner's template for the model family.</summary>
    public static PromptTemplate? ResolveTemplate(string name, ModelConfig model) => name switch
    {
        "none" => null,
        "auto" => XtunerTemplates.Get(model.Architecture switch
        {
            Architecture.Qwen2 => "qwen_chat",
            Architecture.InternLM2 => "internlm2_chat",
            Architecture.Mistral => "mistral",
            _ => "llama3_chat",
        }),
        _ => XtunerTemplates.Get(name),
    };

    /// <summary>The row order of an epoch: a seeded shuffle per epoch (mmengine's DefaultSampler: seed + epoch).</summary>
    public static int[] EpochOrder(int rows, int seed, int epoch)
    {
        var order = Enumerable.Range(0, rows).ToArray();
        new Random(unchecked(seed + epoch)).Shuffle(order);
        return order;
    }
}

/// <summary>One micro-batch: rows padded to the longest (ids 0, labels -100, a segment of their own).</summary>
public sealed record Batch(int[] InputIds, int[] Labels, int[] PositionIds, int[] SegmentIds, int Size, int Length, long Tokens)
{
    public static Batch Assemble(PackedCache data, int[] order, int first, int batchSize)
    {
        var rows = Enumerable.Range(first, Math.Min(batchSize, order.Length - first)).Select(i => data.GetRow(order[i])).ToList();
        int len = rows.Max(r => r.InputIds.Length), n = rows.Count;
        var ids = new int[n * len];
        var labels = new int[n * len];
        var pos = new int[n * len];
        var seg = new int[n * len];
        Array.Fill(labels, -100);
        long tokens = 0;
        for (int b = 0; b < n; b++)
        {
            var r = rows[b];
            int at = b * len;
            r.InputIds.CopyTo(ids, at);
            r.Labels.CopyTo(labels, at);
            r.PositionIds.CopyTo(pos, at);
            for (int s = 0; s + 1 < r.CumulativeLengths.Length; s++)
                for (int t = r.CumulativeLengths[s]; t < r.CumulativeLengths[s + 1]; t++) seg[at + t] = s;
            for (int t = r.InputIds.Length; t < len; t++) seg[at + t] = int.MaxValue; // padding attends to itself only
            tokens += r.InputIds.Length;
        }
        return new Batch(ids, labels, pos, seg, n, len, tokens);
    }
}
