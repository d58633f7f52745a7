// The training loop of `ilgpu-tune train`, as XTuner/mmengine run it: micro-batches of packed rows, loss / k gradient
// accumulation, LR warmup + cosine stepped per micro-batch, unscale -> clip -> AdamW -> scaler update at the end of each
// window, logs every logging_steps, checkpoints every save_steps and at the end. Everything random derives from the seed
// and the iteration number, so a run resumed from a checkpoint continues exactly as the uninterrupted run would.
using System.Diagnostics;
using System.Text.Json;
using IlgpuTune.Core;
using IlgpuTune.Data;
using IlgpuTune.Data.Packing;
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
    /// <summary>Called after every iteration with (iterations done, max iterations), e.g. to drive a progress bar.</summary>
    public Action<int, int>? Progress { get; init; }
    /// <summary>
    /// Diagnosis: after this many iterations, time every kernel launch (KernelProfile; slows the run) and log where a
    /// step goes; the iterations before it log their forward / backward / optimizer wall times.
    /// </summary>
    public int? ProfileAfter { get; init; }
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
        // bf16 / fp16 autocast for matmuls runs on tensor cores; the managed CPU path and the emulator compute in fp32.
        device.UseTrainingPrecision(Precision.FromConfig(cfg.Dtype));
        log.Info($"device: {device}; matmuls {device.Precision}");
        string modelDir = cfg.PretrainedModelNameOrPath;
        string tokenizerDir = cfg.Tokenizer ?? modelDir;
        var tokenizer = Tokenizers.FromDirectory(tokenizerDir);
        var modelConfig = ModelConfig.Load(modelDir);
        var dataOptions = new DataOptions
        {
            DataFiles = cfg.DataPath, Format = cfg.DatasetMapFn, TokenizerDir = tokenizerDir, Template = cfg.PromptTemplate,
            MaxLength = cfg.MaxLength, Pack = cfg.PackToMaxLength, ShuffleBeforePack = cfg.ShuffleBeforePack, Seed = (ulong)cfg.Seed,
        };
        using var data = DataPipeline.Prepare(dataOptions, tokenizer, Path.Combine(workDir, "cache"));
        var stats = data.Stats;
        log.Info($"dataset: {stats.Samples} samples ({stats.DroppedNoLoss} without loss dropped, {stats.Truncated} truncated to " +
            $"{cfg.MaxLength}) in {stats.Rows} rows, fill {stats.FillRatio:P1}");
        if (stats.Rows == 0) throw new InvalidDataException($"{string.Join(", ", cfg.DataPath)}: no trainable sample (every label is -100?)");

        // LoRA with 16-bit tensor-core matmuls keeps the frozen base in that precision: half the memory, no per-step casts.
        // QLoRA (quantization nf4) keeps the decoder linears in 4 bits instead, dequantized per product to the matmul precision.
        var baseDtype = cfg.Lora is null ? DType.F32 : device.Precision.Matmul;
        var quantization = cfg.Quantization == "nf4" ? Kernels.QuantType.Nf4 : (Kernels.QuantType?)null;
        using var model = ModelLoader.Load(modelDir, device, baseDtype, quantization);
        if (quantization is not null)
            log.Info($"quantized {model.QuantizedWeights.Count} linear weights to NF4 (double quant, blocks of 64): " +
                $"{model.QuantizedWeights.Values.Sum(q => q.Bytes) / 1048576.0:F1} MiB on the device");
        if (cfg.Lora is { InitAdapter: { } init })
        {
            PeftAdapter.Load(init, model);
            log.Info($"LoRA initialized from {init}");
        }
        else if (cfg.Lora is { } l)
        {
            var targets = l.TargetModules ?? model.Linears.Select(m => m.Name[(m.Name.LastIndexOf('.') + 1)..]).Distinct().ToList();
            model.ApplyLora(new LoraConfig(l.R, (float)l.LoraAlpha, (float)l.LoraDropout, targets, l.UseRslora), cfg.Seed);
        }
        else model.SetFullFineTuning();
        model.GradientCheckpointing = cfg.GradientCheckpointing;
        var trainable = model.TrainableParameters.ToList();
        var attached = model.Linears.Where(m => m.Lora is not null).ToList();
        var loraState = attached.Count == 0 ? null : new System.Text.Json.Nodes.JsonObject
        {
            ["r"] = attached[0].Lora!.R, ["lora_alpha"] = attached[0].Lora!.Alpha, ["lora_dropout"] = attached[0].Lora!.Dropout,
            ["use_rslora"] = attached[0].Lora!.UseRsLora,
            ["modules"] = new System.Text.Json.Nodes.JsonArray(attached.Select(m => (System.Text.Json.Nodes.JsonNode)m.Name).ToArray()),
        };
        log.Info($"model: {modelConfig.Architecture} {modelDir}; trainable {trainable.Sum(t => t.Length):N0} of " +
            $"{model.ParameterCount + (attached.Count == 0 ? 0 : trainable.Sum(t => t.Length)):N0} parameters" +
            (attached.Count > 0 ? $" (LoRA r={attached[0].Lora!.R}, alpha={attached[0].Lora!.Alpha} on {attached.Count} modules)" : " (full fine-tuning)"));

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

        var evaluator = new EvaluateChat(cfg, tokenizer, modelDir, modelConfig);
        void Evaluate(string when)
        {
            if (!evaluator.Enabled) return;
            foreach (var (input, answer) in evaluator.Run(model))
                log.Info($"Sample output ({when}):\n{input}\n--> {answer}\n");
        }
        if (start == 0) Evaluate("before training");

        using var batchLog = cfg.DumpBatches ? new StreamWriter(Path.Combine(workDir, "batches.jsonl"), append: start > 0) : null;
        var sw = Stopwatch.StartNew();
        double windowLoss = 0, windowTime = 0, windowData = 0;
        long windowTokens = 0;
        int windowCount = 0;
        float? lastNorm = resumeState?.LastGradNorm;
        int[]? order = null;
        int orderEpoch = -1;
        var profile = options.ProfileAfter is null || device.Kernels is null ? null : new Kernels.KernelProfile();
        int profiledIters = 0;
        for (int iter = start; iter < maxIters; iter++)
        {
            if (options.StopAfter is { } stop && iter - start >= stop) break;
            if (profile is not null && iter - start == options.ProfileAfter) device.Kernels!.Profile = profile;
            if (device.Kernels?.Profile is not null) profiledIters++;
            var t0 = sw.Elapsed;
            int epoch = iter / itersPerEpoch;
            if (epoch != orderEpoch) (order, orderEpoch) = (EpochOrder(rows, cfg.Seed, epoch), epoch);
            var batch = Batch.Assemble(data, order!, (iter % itersPerEpoch) * cfg.BatchSize, cfg.BatchSize);
            var t1 = sw.Elapsed;
            batchLog?.WriteLine(JsonSerializer.Serialize(new { iter, batch.Size, batch.Length, input_ids = batch.InputIds, labels = batch.Labels,
                position_ids = batch.PositionIds, segment_ids = batch.SegmentIds }));

            float lr = (float)schedule.LrAt(iter);
            float loss;
            TimeSpan tForward;
            using (var tape = new Tape())
            {
                using var lossTensor = model.Loss(batch.InputIds, batch.Labels, batch.Size, batch.Length,
                    batch.PositionIds, batch.SegmentIds, new Random(unchecked(cfg.Seed * 1_000_003 + iter)));
                loss = lossTensor.Item();
                tForward = sw.Elapsed;
                if (lossTensor.RequiresGrad) tape.Backward(lossTensor, scaler.Scale / plan.LossDivisor(iter));
            }
            if (profile is not null) device.Synchronize();
            var tBackward = sw.Elapsed;
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
            if (profile is not null)
            {
                device.Synchronize();
                if (device.Kernels!.Profile is null)
                    log.Info($"iteration {iter + 1} unprofiled: data {(t1 - t0).TotalMilliseconds:F1} ms, forward {(tForward - t1).TotalMilliseconds:F1} ms, " +
                        $"backward {(tBackward - tForward).TotalMilliseconds:F1} ms, clip + optimizer {(sw.Elapsed - tBackward).TotalMilliseconds:F1} ms");
            }

            var t2 = sw.Elapsed;
            windowLoss += loss;
            windowTime += (t2 - t0).TotalSeconds;
            windowData += (t1 - t0).TotalSeconds;
            windowTokens += batch.Tokens;
            windowCount++;
            int done = iter + 1;
            options.Progress?.Invoke(done, maxIters);
            if (done % cfg.LoggingSteps == 0 || done == maxIters)
            {
                double perIter = windowTime / windowCount;
                log.Iteration(new LogRecord(done, maxIters, lr, windowLoss / windowCount, lastNorm, perIter, windowData / windowCount,
                    device.Allocator.PeakAllocatedBytes / 1048576.0, windowTokens / Math.Max(windowTime, 1e-9),
                    TimeSpan.FromSeconds(perIter * (maxIters - done))));
                (windowLoss, windowTime, windowData, windowTokens, windowCount) = (0, 0, 0, 0, 0);
            }
            if (done % cfg.EvaluationFreq == 0 && done != maxIters) Evaluate($"iter {done}");
            if (done % cfg.SaveSteps == 0 || done == maxIters)
            {
                Checkpoint.Save(workDir, new CheckpointState(done, steps, cfg.Seed,
                        scaler.Enabled ? (System.Text.Json.Nodes.JsonObject)System.Text.Json.JsonSerializer.SerializeToNode(scaler.ExportState())! : [],
                        cfg.Source, Path.GetFullPath(modelDir), loraState, lastNorm),
                    trainable, optimizer.ExportState(), cfg.SaveTotalLimit);
                log.Info($"saved checkpoint {Checkpoint.DirFor(workDir, done)}");
            }
        }
        if (profile is not null && profiledIters > 0)
        {
            profile.Flush(device.Kernels!.Accelerator);
            device.Kernels.Profile = null;
            log.Info(profile.Report(profiledIters));
        }
        log.WriteCurve();
        if (Checkpoint.List(workDir).LastOrDefault().Iter == maxIters) Evaluate("after training");

        string? adapterDir = null;
        if (cfg.Lora is not null && Checkpoint.List(workDir).LastOrDefault().Iter == maxIters)
        {
            adapterDir = Path.Combine(workDir, "adapter");
            PeftAdapter.Save(adapterDir, model, Path.GetFullPath(modelDir));
            log.Info($"adapter written to {adapterDir}");
        }
        return new TrainResult(workDir, maxIters, log.Records, adapterDir);
    }

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
