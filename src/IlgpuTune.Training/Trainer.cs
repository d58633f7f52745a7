// The training loop of `ilgpu-tune train`, as XTuner/mmengine run it: micro-batches of packed rows, loss / k gradient
// accumulation, LR warmup + cosine stepped per micro-batch, unscale -> clip -> AdamW -> scaler update at the end of each
// window, logs every logging_steps, checkpoints every save_steps and at the end. Everything random derives from the seed
// and the iteration number, so a run resumed from a checkpoint continues exactly as the uninterrupted run would.
// A run is a TrainRun with phases: Open (validate everything, then lock the work dir and start this launch's log
// folder), Resume, Step, Evaluate, Save, Export. Nothing is written into the work dir before every input checks out.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.Data;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Numerics;
using IlgpuTune.Training.Preference;
using IlgpuTune.Distributed;
using IlgpuTune.Training.Distributed;

namespace IlgpuTune.Training;

public sealed record TrainOptions
{
    public string? WorkDir { get; init; }
    /// <summary>null: start fresh; "": the latest checkpoint in the work dir; else a checkpoint folder.</summary>
    public string? Resume { get; init; }
    /// <summary>Start fresh in a work dir that holds another run's checkpoints, deleting them (its log folders stay).</summary>
    public bool Overwrite { get; init; }
    public Action<string> Console { get; init; } = System.Console.WriteLine;
    /// <summary>Stop (as if killed) after this many iterations of this process; for tests of resume.</summary>
    public int? StopAfter { get; init; }
    /// <summary>Stop after the current iteration and save a resumable checkpoint (SIGINT / SIGTERM).</summary>
    public CancellationToken Stop { get; init; }
    /// <summary>Called after every iteration with (iterations done, max iterations), e.g. to drive a progress bar.</summary>
    public Action<int, int>? Progress { get; init; }
    /// <summary>
    /// Diagnosis: after this many iterations, time every kernel launch (KernelProfile; slows the run) and log where a
    /// step goes; the iterations before it log their forward / backward / optimizer wall times.
    /// </summary>
    public int? ProfileAfter { get; init; }
    /// <summary>The --cfg-options of this launch, recorded in the copy of the config in its log folder.</summary>
    public IReadOnlyList<string> ConfigOverrides { get; init; } = [];
    /// <summary>
    /// Several ranks (processes or, in tests, threads): this rank's communicator. Each rank reads its shard of the data,
    /// gradients are synchronized per <see cref="ZeroStage"/>, and only rank 0 logs, evaluates and writes the work dir.
    /// </summary>
    public ICommunicator? Communicator { get; init; }
    /// <summary>With a communicator: 0 all-reduce (DDP), 1 ZeRO-1 (AdamW state sharded), 2 ZeRO-2 (gradients sharded too).</summary>
    public int ZeroStage { get; init; }
    /// <summary>This rank's GPU on its node (LOCAL_RANK).</summary>
    public int LocalRank { get; init; }
}

/// <param name="RunDir">This launch's log folder (work_dir/YYYYmmdd_HHMMSS).</param>
/// <param name="Done">Iterations done when the run returned (less than Iterations when stopped or interrupted).</param>
/// <param name="LastCheckpoint">The newest complete checkpoint of the work dir, if any.</param>
/// <param name="Interrupted">Stopped by <see cref="TrainOptions.Stop"/> (a checkpoint at Done was saved).</param>
public sealed record TrainResult(string WorkDir, string RunDir, int Iterations, int Done, IReadOnlyList<LogRecord> Log, string? AdapterDir,
    string? LastCheckpoint, bool Interrupted);

/// <summary>The run cannot go on (non-finite losses, divergence, a non-finite weight): the message says why and what to change.</summary>
public sealed class TrainingStoppedException(string message) : Exception(message);

public static class Trainer
{
    public static TrainResult Run(TrainConfig cfg, TrainOptions options)
    {
        using var run = TrainRun.Open(cfg, options);
        return run.Run();
    }

    /// <summary>The row order of an epoch: a seeded shuffle per epoch (mmengine's DefaultSampler: seed + epoch).</summary>
    public static int[] EpochOrder(int rows, int seed, int epoch)
    {
        var order = Enumerable.Range(0, rows).ToArray();
        new Random(unchecked(seed + epoch)).Shuffle(order);
        return order;
    }
}

public sealed partial class TrainRun : IDisposable
{
    private readonly TrainConfig _cfg;
    private readonly TrainOptions _options;
    private readonly string _workDir;
    private readonly string _modelDir;
    private readonly TrainLog _log;
    private readonly List<IDisposable> _owned = [];
    private WorkDirLock? _lock;
    private Device _device = null!;
    private PackedCache _data = null!;
    private CausalLM _model = null!;
    private List<Tensor> _trainable = null!;
    private JsonObject? _loraState;
    private AdamW _optimizer = null!;
    private DistributedOptimizer? _dist; // several ranks: replaces _optimizer
    private readonly ICommunicator? _comm;
    private readonly bool _rank0;
    private bool _stopAgreed;
    private GradScaler _scaler = null!;
    private LrSchedule _schedule = null!;
    private AccumulationPlan _plan = null!;
    private EvaluateChat _evaluator = null!;
    private StreamWriter? _batchLog;
    private string? _resumeDir;
    private CheckpointState? _resumeState;
    private string _runId = Guid.NewGuid().ToString("N");
    private List<string> _logDirs = [];
    private int _rows, _itersPerEpoch, _maxIters, _vocab;
    private int _start, _steps, _saved = -1;
    private float? _lastNorm;
    // Non-finite handling: whether the current accumulation window saw a non-finite loss, and the run of skipped / zero-norm steps.
    private bool _windowNonFinite;
    private int _skippedInARow, _zeroNormInARow;
    // The logging window's sums.
    private double _windowLoss, _windowTime, _windowData;
    private long _windowTokens;
    private int _windowCount;
    private int[]? _order;
    private int _orderEpoch = -1;
    private readonly Stopwatch _clock = new();

    private TrainRun(TrainConfig cfg, TrainOptions options)
    {
        _cfg = cfg;
        _options = options;
        _workDir = Path.GetFullPath(options.WorkDir ?? cfg.WorkDir ?? Path.Combine("work_dirs", Path.GetFileNameWithoutExtension(cfg.Source)));
        _modelDir = cfg.PretrainedModelNameOrPath;
        _comm = options.Communicator is { WorldSize: > 1 } comm ? comm : null;
        _rank0 = _comm is null || _comm.Rank == 0;
        _log = new TrainLog(_rank0 ? options.Console : _ => { });
        _preference = cfg.Preference == "none" ? null : new PreferenceObjective(cfg);
    }

    /// <summary>
    /// Setup: checks the model folder and its config, the tokenizer, the dataset (trainable samples), the checkpoint to
    /// resume, the work dir (not locked by another run, no other run's checkpoints unless resuming or overwriting) and the
    /// disk space for a checkpoint, all before writing anything into the work dir; then takes its lock and starts the log.
    /// </summary>
    public static TrainRun Open(TrainConfig cfg, TrainOptions options)
    {
        var run = new TrainRun(cfg, options);
        try
        {
            run.Setup();
            return run;
        }
        catch
        {
            run.Dispose();
            throw;
        }
    }

    private T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    private void Setup()
    {
        var cfg = _cfg;
        if (_options.Resume is not null)
        {
            _resumeDir = Checkpoint.Resolve(_workDir, _options.Resume.Length == 0 ? null : _options.Resume);
            _resumeState = Checkpoint.ReadState(_resumeDir);
        }
        if (!Directory.Exists(_modelDir))
            throw new DirectoryNotFoundException($"pretrained_model_name_or_path: model folder {_modelDir} does not exist");
        var modelConfig = ModelConfig.Load(_modelDir);
        if (cfg.OffloadEmbeddings == true && modelConfig.TieWordEmbeddings)
            throw new ConfigException($"offload_embeddings: {Path.Combine(_modelDir, "config.json")} has tie_word_embeddings: the embedding " +
                "is the output head too, so it stays on the device; remove the key");
        _vocab = modelConfig.VocabSize;
        string tokenizerDir = cfg.Tokenizer ?? _modelDir;
        var tokenizer = Tokenizers.FromDirectory(tokenizerDir);

        // The dataset: from the user-level dataset cache when it holds these rows, else read, encoded and packed in memory
        // (the cache is written once the work dir is ours).
        var dataOptions = new DataOptions
        {
            DataFiles = cfg.DataPath, Format = cfg.DatasetMapFn, TokenizerDir = tokenizerDir, Template = cfg.PromptTemplate,
            MaxLength = cfg.MaxLength, Pack = cfg.PackToMaxLength, ShuffleBeforePack = cfg.ShuffleBeforePack, Seed = (ulong)cfg.Seed,
            Columns = cfg.DatasetColumns, TextSampleBy = TextRecords.ParseSampleBy(cfg.TextSampleBy),
        };
        string cacheDir = cfg.DatasetCacheDir ?? DataPipeline.DefaultCacheDir(), cacheKey = DataPipeline.CacheKey(dataOptions, cacheDir) + PreferenceCacheSuffix();
        var cached = PackedCache.TryOpen(cacheDir, cacheKey);
        IReadOnlyList<PackedRow>? packed = null;
        PackStats stats;
        if (cached is not null) stats = Own(cached).Stats;
        else if (_preference is not null) (packed, stats) = PreparePreferenceData(dataOptions, tokenizer);
        else
        {
            EncodedSample[] samples;
            using (var progress = _rank0 ? PrepareProgress.ToStderr() : null)
                samples = DataPipeline.ReadAndEncode(dataOptions, DataPipeline.CreateEncoder(dataOptions, tokenizer), progress).Samples;
            if (samples.Length == 0) throw new InvalidDataException($"{string.Join(", ", cfg.DataPath)}: the dataset has no sample");
            (packed, stats) = DataPipeline.Plan(samples, dataOptions);
        }
        if (stats.Rows == 0)
            throw new InvalidDataException($"{string.Join(", ", cfg.DataPath)}: no trainable sample: {DataPipeline.Diagnose(dataOptions, tokenizer).NoTrainableReason()}");

        if (_comm is not null && cfg.Dtype == "float16")
            throw new ConfigException("dtype: float16 (dynamic loss scaling) is single-GPU only; train on several GPUs with bfloat16 or float32");
        _device = Own(Device.Create(cfg.Device, _options.LocalRank));
        // bf16 / fp16 autocast for matmuls runs on tensor cores; the managed CPU path and the emulator compute in fp32.
        var asked = Precision.FromConfig(cfg.Dtype);
        _device.UseTrainingPrecision(asked);
        _log.Info($"device: {_device}; matmuls {_device.Precision}");
        if (_device.Precision != asked)
            _log.Warning($"dtype {cfg.Dtype}: {_device.Kind} has no {cfg.Dtype} matmuls; this run computes in float32 " +
                (cfg.Dtype == "float16" ? "(with float16's dynamic loss scaling)" : "(losses match a float32 run, not a bfloat16 one)"));
        _rows = stats.Rows;
        _log.Info($"dataset: {stats.Samples} samples ({stats.DroppedNoLoss} without loss dropped, {stats.Truncated} truncated to " +
            $"{cfg.MaxLength}) in {stats.Rows} rows, fill {stats.FillRatio:P1}");

        LoadModel(modelConfig);
        if (_resumeDir is not null) Resume(); // a checkpoint that does not fit this config fails here, before any write
        _evaluator = new EvaluateChat(cfg, tokenizer, _modelDir, modelConfig);
        // An evaluation prompt the model cannot hold would fail mid-run: refuse it now.
        if (Model.Generation.GenerationConfig.MaxPositions(modelConfig) is { } maxPositions)
            foreach (var input in cfg.EvaluationInputs)
                if (tokenizer.Encode(_evaluator.Prompt(input), addSpecialTokens: true).Length >= maxPositions)
                    throw new ConfigException($"evaluation_inputs: the prompt of '{(input.Length > 40 ? input[..40] + "…" : input)}' does not fit in the " +
                        $"model's max_position_embeddings ({maxPositions} tokens) with room for an answer");
        CheckDiskSpace();

        if (!_rank0)
        {
            // Rank 0 owns the work dir: it locks it and writes the dataset cache; the other ranks read that cache.
            Barrier();
            _data = Own(PackedCache.TryOpen(cacheDir, cacheKey) ?? throw new IOException($"rank {_comm!.Rank}: rank 0's dataset cache {cacheDir} is not readable here (multi-node runs need the work dir on a shared file system)"));
            if (_resumeState is not null) (_runId, _logDirs) = (_resumeState.RunId.Length > 0 ? _resumeState.RunId : _runId, [.. _resumeState.LogDirs ?? []]);
            return;
        }
        // The work dir: ours for the run's life, and it must not hold another run's checkpoints.
        _lock = WorkDirLock.Acquire(_workDir);
        var existing = Checkpoint.List(_workDir);
        if (_resumeDir is null && existing.Count > 0)
        {
            if (!_options.Overwrite)
                throw new InvalidOperationException($"work dir {_workDir} holds checkpoints of another run " +
                    $"({string.Join(", ", existing.TakeLast(3).Select(c => Path.GetFileName(c.Dir)))}): pass --resume to continue it, " +
                    "--overwrite to delete its checkpoints and start over (its logs stay), or another --work-dir");
            foreach (var (dir, _) in existing) Directory.Delete(dir, recursive: true);
            File.Delete(Path.Combine(_workDir, Checkpoint.LastCheckpointFile));
            string adapter = Path.Combine(_workDir, "adapter");
            if (Directory.Exists(adapter)) Directory.Delete(adapter, recursive: true);
        }
        _data = cached ?? Own(PackedCache.Write(cacheDir, cacheKey, packed!, stats));
        _preference?.PrepareReference(_model, _data, _workDir, cacheKey, _resumeDir is not null, cfg.Lora is not null, _log.Info);
        if (_comm is not null) Barrier();

        if (_resumeState is not null) (_runId, _logDirs) = (_resumeState.RunId.Length > 0 ? _resumeState.RunId : _runId, [.. _resumeState.LogDirs ?? []]);
        var earlier = _resumeState is null ? [] : TrainLog.ReadEarlier(_logDirs.Select(d => Path.Combine(_workDir, d)), _resumeState.Iter);
        string runDir = _log.Open(_workDir, DateTime.Now, earlier);
        _logDirs.Add(Path.GetFileName(runDir));
        WriteConfigCopy(runDir);
        _log.Info($"log folder {runDir}; memory: peak device memory in MiB");
        if (cfg.DumpBatches) _batchLog = Own(new StreamWriter(Path.Combine(runDir, "batches.jsonl")));
    }

    private void LoadModel(ModelConfig modelConfig)
    {
        var cfg = _cfg;
        // LoRA with 16-bit tensor-core matmuls keeps the frozen base in that precision: half the memory, no per-step casts.
        // QLoRA (quantization nf4) keeps the decoder linears in 4 bits instead, dequantized per product to the matmul precision.
        // On the managed CPU path a LoRA base stored in bf16/fp16 stays so (mapped, widened inside the products).
        var baseDtype = cfg.Lora is null ? DType.F32 : _device.Precision.Matmul;
        var quantization = cfg.Quantization == "nf4" ? Numerics.QuantType.Nf4 : (Numerics.QuantType?)null;
        _model = Own(ModelLoader.Load(_modelDir, _device, baseDtype, quantization, frozenAsStored: cfg.Lora is not null,
            embeddingOnHost: OffloadEmbeddings(cfg, modelConfig, _device.Caps, baseDtype)));
        if (_model.EmbeddingOnHost)
            _log.Info($"offload_embeddings: the frozen embedding ({_model.EmbedTokens.Bytes / 1048576.0:F1} MiB, {_model.EmbedTokens.DType}) " +
                "stays in host memory; each step uploads its batch's rows");
        if (_model.Parameters.Values.Where(p => p.DType != DType.F32).ToList() is [var first, ..] half)
            _log.Info($"frozen base: {half.Count} weights kept in {first.DType} ({half.Sum(p => p.Bytes) / 1048576.0:F1} MiB)");
        if (quantization is not null)
            _log.Info($"quantized {_model.QuantizedWeights.Count} linear weights to NF4 (double quant, blocks of 64): " +
                $"{_model.QuantizedWeights.Values.Sum(q => q.Bytes) / 1048576.0:F1} MiB on the device");
        if (cfg.Lora is { InitAdapter: { } init })
        {
            PeftAdapter.Load(init, _model);
            _log.Info($"LoRA initialized from {init}");
        }
        else if (cfg.Lora is { } l)
        {
            var targets = l.TargetModules ?? _model.Linears.Select(m => m.Name[(m.Name.LastIndexOf('.') + 1)..]).Distinct().ToList();
            _model.ApplyLora(new LoraConfig(l.R, (float)l.LoraAlpha, (float)l.LoraDropout, targets, l.UseRslora), cfg.Seed);
        }
        else _model.SetFullFineTuning();
        _model.GradientCheckpointing = cfg.GradientCheckpointing;
        // Opt-in: at 7B and 2,048 tokens the peak comes at the end of backward (every LoRA gradient made, the checkpoints
        // gone), so offloading them saved nothing there and cost ~3% of the step on the H100; it pays with long rows.
        _model.OffloadCheckpoints = cfg.OffloadCheckpoints;
        if (_model.OffloadCheckpoints && cfg.GradientCheckpointing && _device.Backend.HostOffload is not null)
            _log.Info("gradient checkpoints: the layer inputs wait in page-locked host memory between forward and backward");
        else if (cfg.OffloadCheckpoints) _log.Info("offload_checkpoints: this device keeps the checkpointed layer inputs in its own memory");
        _trainable = _model.TrainableParameters.ToList();
        AddPreferenceHead();
        var attached = _model.Linears.Where(m => m.Lora is not null).ToList();
        _loraState = attached.Count == 0 ? null : new JsonObject
        {
            ["r"] = attached[0].Lora!.R, ["lora_alpha"] = attached[0].Lora!.Alpha, ["lora_dropout"] = attached[0].Lora!.Dropout,
            ["use_rslora"] = attached[0].Lora!.UseRsLora,
            ["modules"] = new JsonArray(attached.Select(m => (JsonNode)m.Name).ToArray()),
        };
        _log.Info($"model: {modelConfig.Architecture} {_modelDir}; trainable {_trainable.Sum(t => t.Length):N0} of " +
            $"{_model.ParameterCount + (attached.Count == 0 ? 0 : _trainable.Sum(t => t.Length)):N0} parameters" +
            (attached.Count > 0 ? $" (LoRA r={attached[0].Lora!.R}, alpha={attached[0].Lora!.Alpha} on {attached.Count} modules)" : " (full fine-tuning)"));

        if (_comm is not null)
        {
            _dist = Own(new DistributedOptimizer(_comm, _trainable, _options.ZeroStage, cfg.Lr, cfg.Betas[0], cfg.Betas[1], 1e-8, cfg.WeightDecay, cfg.PagedOptimizer));
            _log.Info($"{_comm.WorldSize} ranks, {(_options.ZeroStage == 0 ? "gradients all-reduced (DDP)" : $"ZeRO stage {_options.ZeroStage}")}: " +
                $"AdamW state of {_dist.StateElements:N0} elements per moment on each rank");
        }
        else _optimizer = Own(new AdamW(_trainable, cfg.Lr, cfg.Betas[0], cfg.Betas[1], 1e-8, cfg.WeightDecay, cfg.PagedOptimizer));
        _scaler = new GradScaler(enabled: cfg.Dtype == "float16");
    }

    // offload_embeddings: unset = on for QLoRA on a GPU (the managed CPU path's tensors are host memory already); a frozen
    // embedding (LoRA) and an untied head only (Validate and Setup refuse asking for it otherwise).
    internal static bool OffloadEmbeddings(TrainConfig cfg, ModelConfig modelConfig, DeviceCaps caps, DType tableDtype)
    {
        bool wanted = cfg.OffloadEmbeddings ?? (cfg.Quantization == "nf4" && caps.SeparateMemory);
        if (!wanted || cfg.Lora is null || modelConfig.TieWordEmbeddings) return false;
        long bytes = (long)modelConfig.VocabSize * modelConfig.HiddenSize * tableDtype.Size();
        if (bytes <= CausalLM.MaxHostTableBytes) return true;
        if (cfg.OffloadEmbeddings == true)
            throw new ConfigException($"offload_embeddings: the {tableDtype} embedding table is {bytes / (double)(1L << 30):F2} GiB, more than a " +
                $"host tensor holds ({CausalLM.MaxHostTableBytes / (double)(1L << 30):F0} GiB); train with dtype bfloat16 or remove the key");
        return false;
    }

    // A checkpoint holds fp32 weights, two AdamW moments and (mid-window) gradients of every trainable tensor.
    private void CheckDiskSpace()
    {
        long need = _trainable.Sum(t => (long)t.Length) * 4 * 4 + (1 << 20);
        string? probe = _workDir;
        while (probe is not null && !Directory.Exists(probe)) probe = Path.GetDirectoryName(probe);
        if (probe is null) return;
        long free = new DriveInfo(probe).AvailableFreeSpace;
        if (free < need)
            throw new InvalidOperationException($"work dir {_workDir}: {free / 1048576.0:F0} MiB free, a checkpoint of this run needs " +
                $"{need / 1048576.0:F0} MiB; free space or pass another --work-dir");
    }

    private void WriteConfigCopy(string runDir)
    {
        string text = File.Exists(_cfg.Source) ? File.ReadAllText(_cfg.Source)
            : Builtins.ConfigNames.Contains(Path.GetFileNameWithoutExtension(_cfg.Source)) ? Builtins.ConfigText(Path.GetFileNameWithoutExtension(_cfg.Source))
            : "";
        string header = $"# {_cfg.Source}" + string.Concat(_options.ConfigOverrides.Select(o => $"\n# --cfg-options {o}")) + "\n";
        AtomicFile.WriteAllText(Path.Combine(runDir, Path.GetFileName(_cfg.Source) is { Length: > 0 } n ? n : "config.yaml"), header + text);
    }

    /// <summary>Runs the iterations left, evaluating, saving and logging on schedule, then exports the adapter.</summary>
    public TrainResult Run()
    {
        var cfg = _cfg;
        _itersPerEpoch = (DataShard.RowsPerRank(_rows, _comm?.WorldSize ?? 1) + cfg.BatchSize - 1) / cfg.BatchSize;
        _maxIters = cfg.MaxIters ?? cfg.MaxEpochs * _itersPerEpoch;
        _schedule = cfg.MaxIters is null
            ? LrSchedule.Xtuner(cfg.Lr, cfg.WarmupRatio, cfg.MaxEpochs, _itersPerEpoch)
            : new LrSchedule(cfg.Lr, (int)(cfg.WarmupRatio * _maxIters), _maxIters);
        _plan = new AccumulationPlan(_maxIters, cfg.AccumulativeCounts);
        _log.Info($"{_rows} rows, batch {cfg.BatchSize}, {_itersPerEpoch} iterations per epoch, {_maxIters} iterations, " +
            $"accumulative_counts {cfg.AccumulativeCounts}, lr {cfg.Lr}, work_dir {_workDir}");
        if (_start == 0) Evaluate("before training");

        var profile = _options.ProfileAfter is null || _device.Kernels is null ? null : new Kernels.KernelProfile();
        int profiledIters = 0, done = _start;
        bool interrupted = false;
        _clock.Start();
        try
        {
            for (int iter = _start; iter < _maxIters; iter++)
            {
                if (_options.StopAfter is { } stop && iter - _start >= stop) break;
                if (_comm is null ? _options.Stop.IsCancellationRequested : _stopAgreed)
                {
                    interrupted = true;
                    break;
                }
                if (profile is not null && iter - _start == _options.ProfileAfter) _device.Kernels!.Profile = profile;
                if (_device.Kernels?.Profile is not null) profiledIters++;
                Step(iter, profile is not null);
                done = iter + 1;
                _options.Progress?.Invoke(done, _maxIters);
                if (done % cfg.EvaluationFreq == 0 && done != _maxIters) Evaluate($"iter {done}");
                if (done % cfg.SaveSteps == 0 || done == _maxIters) Save(done);
            }
            if (interrupted && _saved != done && done > 0)
            {
                _log.Warning($"interrupted at iteration {done}/{_maxIters}: saving a checkpoint to resume from");
                Save(done);
            }
        }
        finally
        {
            if (profile is not null && profiledIters > 0)
            {
                profile.Flush(_device.Kernels!.Accelerator);
                _device.Kernels.Profile = null;
                _log.Info(profile.Report(profiledIters));
                _log.Info(MemoryBreakdown());
            }
            _log.WriteCurve();
        }
        string? adapterDir = null;
        if (!interrupted && _saved == _maxIters)
        {
            Evaluate("after training");
            if (_rank0)
            {
                adapterDir = Export();
                ExportPreference();
            }
        }
        string? last = Checkpoint.List(_workDir).Count > 0 ? Checkpoint.Resolve(_workDir, null) : null;
        return new TrainResult(_workDir, _log.RunDir ?? "", _maxIters, done, _log.Records, adapterDir, last, interrupted);
    }

    /// <summary>Loads the checkpoint's weights, optimizer and scaler state and its position in the run.</summary>
    private void Resume()
    {
        var state = _resumeState!;
        Checkpoint.LoadTrainable(_resumeDir!, _trainable);
        if (_dist is not null)
        {
            _dist.ReloadParameters();
            _dist.AdoptGrads();
            _dist.LoadState(Checkpoint.ReadOptimizer(_resumeDir!));
        }
        else _optimizer.LoadState(Checkpoint.ReadOptimizer(_resumeDir!));
        if (state.Scaler.Count > 0)
            _scaler.LoadState(state.Scaler.Deserialize(TrainingJson.Default.GradScalerState) ?? throw new InvalidDataException($"{_resumeDir}: bad scaler state"));
        (_start, _steps, _lastNorm, _windowNonFinite, _saved) = (state.Iter, state.OptimizerSteps, state.LastGradNorm, state.WindowNonFinite, state.Iter);
        _log.Info($"resumed from {_resumeDir} at iteration {_start}");
    }

    /// <summary>One micro-batch: forward, backward, and at the end of an accumulation window the optimizer step.</summary>
    private void Step(int iter, bool profiling)
    {
        var cfg = _cfg;
        var t0 = _clock.Elapsed;
        int epoch = iter / _itersPerEpoch;
        if (epoch != _orderEpoch)
            (_order, _orderEpoch) = (DataShard.ForRank(Trainer.EpochOrder(_rows, cfg.Seed, epoch), _comm?.Rank ?? 0, _comm?.WorldSize ?? 1), epoch);
        var batch = Batch.Assemble(_data, _order!, (iter % _itersPerEpoch) * cfg.BatchSize, cfg.BatchSize);
        var t1 = _clock.Elapsed;
        _batchLog?.WriteLine(JsonSerializer.Serialize(new BatchDump(iter, batch.Size, batch.Length, batch.InputIds, batch.Labels,
            batch.PositionIds, batch.SegmentIds), TrainingJson.Default.BatchDump));

        float lr = (float)_schedule.LrAt(iter);
        float loss;
        TimeSpan tForward;
        using (var tape = new Tape())
        {
            var rng = new Random(unchecked(cfg.Seed * 1_000_003 + iter));
            using var lossTensor = _preference is null
                ? _model.Loss(batch.InputIds, batch.Labels, batch.Size, batch.Length, batch.PositionIds, batch.SegmentIds, rng)
                : PreferenceLoss(iter, batch, rng);
            loss = lossTensor.Item();
            tForward = _clock.Elapsed;
            // The forward pass has waited for every parameter the last (paged) optimizer step updated: its gradients can go.
            _optimizer?.Settle();
            // A non-finite loss poisons the window: no backward (its gradients would be NaN), and the window's step is skipped.
            if (!float.IsFinite(loss)) _windowNonFinite = true;
            else if (lossTensor.RequiresGrad) tape.Backward(lossTensor, _scaler.Scale / _plan.LossDivisor(iter));
        }
        long tokens = batch.Tokens;
        if (_comm is not null) (loss, tokens) = Synchronize(loss, tokens);
        if (profiling) _device.Synchronize();
        var tBackward = _clock.Elapsed;
        if (_plan.EndsStep(iter)) OptimizerStep(iter, lr, loss);
        if (profiling)
        {
            var tEnqueued = _clock.Elapsed; // a paged step returns once enqueued: it runs under the next forward pass
            _device.Synchronize();
            if (_device.Kernels!.Profile is null)
                _log.Info($"iteration {iter + 1} unprofiled: data {(t1 - t0).TotalMilliseconds:F1} ms, forward {(tForward - t1).TotalMilliseconds:F1} ms, " +
                    $"backward {(tBackward - tForward).TotalMilliseconds:F1} ms, clip + optimizer {(_clock.Elapsed - tBackward).TotalMilliseconds:F1} ms " +
                    $"(host {(tEnqueued - tBackward).TotalMilliseconds:F1} ms)");
        }

        var t2 = _clock.Elapsed;
        _windowLoss += loss;
        _windowTime += (t2 - t0).TotalSeconds;
        _windowData += (t1 - t0).TotalSeconds;
        _windowTokens += tokens;
        _windowCount++;
        int done = iter + 1;
        if (done % cfg.LoggingSteps == 0 || done == _maxIters)
        {
            double perIter = _windowTime / _windowCount;
            _log.Iteration(new LogRecord(done, _maxIters, lr, _windowLoss / _windowCount, _lastNorm, perIter, _windowData / _windowCount,
                _device.Allocator.PeakAllocatedBytes / 1048576.0, _windowTokens / Math.Max(_windowTime, 1e-9),
                TimeSpan.FromSeconds(perIter * (_maxIters - done)), TakeWindowMetrics()));
            (_windowLoss, _windowTime, _windowData, _windowTokens, _windowCount) = (0, 0, 0, 0, 0);
        }
    }

    // Where the peak device memory goes (train --profile): weights and optimizer as held, the rest is activations, saved
    // tensors and workspaces at the peak. Gradients of the trainable tensors are fp32 and all live at the end of a backward.
    private string MemoryBreakdown()
    {
        const double GiB = 1 << 30;
        var trainable = _trainable.ToHashSet();
        long frozen = _model.Parameters.Values.Where(t => !trainable.Contains(t) && t.Device == _device).Sum(t => t.Bytes);
        long quantized = _model.QuantizedWeights.Values.Sum(q => q.Bytes);
        long weights = _trainable.Sum(t => t.Bytes), grads = _trainable.Sum(t => t.Length * 4);
        long optimizer = _cfg.PagedOptimizer || _comm is not null ? 0 : 2 * _trainable.Sum(t => t.Length * 4);
        long peak = _device.Allocator.PeakAllocatedBytes;
        return $"memory at peak {peak / GiB:F2} GiB: frozen weights {frozen / GiB:F2} (dense" +
            $"{(_model.EmbeddingOnHost ? $"; the embedding's {_model.EmbedTokens.Bytes / GiB:F2} are on the host" : "")}) + {quantized / GiB:F2} (4-bit), " +
            $"trainable {weights / GiB:F2}, their gradients {grads / GiB:F2}, AdamW moments on the device {optimizer / GiB:F2}" +
            $"{(_cfg.PagedOptimizer ? " (paged to host)" : _comm is not null ? " (sharded across ranks: counted in the rest)" : "")}; activations, saved tensors and workspaces {(peak - frozen - quantized - weights - grads - optimizer) / GiB:F2}" +
            (_model.OffloadCheckpoints && _device.Backend.HostOffload is { HostBytes: > 0 and var pinned } ? $"; checkpoints offloaded to host {pinned / GiB:F2} (pinned)" : "");
    }

    // mmengine's order: unscale -> clip -> step (skipped on inf/NaN, in every dtype, as torch's GradScaler does in fp16) ->
    // scaler update. Too many skips in a row, or a gradient that stays exactly zero (weights saturated), stop the run.
    private void OptimizerStep(int iter, float lr, float loss)
    {
        var cfg = _cfg;
        bool scalerOverflow = false, nonFinite;
        float norm;
        if (_dist is not null)
        {
            // The window flag is global: Synchronize made every rank's loss the mean over ranks.
            _dist.Lr = lr;
            (norm, bool stepped) = _dist.Step((float)cfg.MaxNorm, skip: _windowNonFinite);
            nonFinite = _windowNonFinite || !float.IsFinite(norm);
            if (stepped) _steps++;
        }
        else
        {
            scalerOverflow = _scaler.Unscale(_optimizer);
            norm = cfg.MaxNorm > 0 ? GradClipping.ClipGradNorm(_trainable, (float)cfg.MaxNorm) : GradClipping.GradNorm(_trainable);
            nonFinite = _windowNonFinite || !float.IsFinite(norm);
            _optimizer.Lr = lr;
            if (!nonFinite && _scaler.Step(_optimizer)) _steps++;
            _scaler.Update();
            _optimizer.ZeroGrad();
        }
        _lastNorm = norm;
        _windowNonFinite = false;
        // fp16's overflows of the scaled gradients are the scaler's business (it backs off); a non-finite loss is not.
        bool skipped = nonFinite && !(scalerOverflow && float.IsFinite(loss) && _scaler.Enabled);
        if (skipped)
        {
            _skippedInARow++;
            _log.Warning($"iteration {iter + 1}: non-finite {(float.IsFinite(norm) ? "loss" : "gradient norm")} (loss {loss}, grad_norm {norm}): " +
                $"update skipped ({_skippedInARow} in a row; the run stops at max_skipped_steps {cfg.MaxSkippedSteps})");
            if (_skippedInARow >= cfg.MaxSkippedSteps)
                throw new TrainingStoppedException($"{_skippedInARow} updates in a row skipped for non-finite loss or gradients " +
                    $"(iteration {iter + 1}, lr {lr:G3}): the run diverged; lower lr (now {cfg.Lr:G3}) or check the data. {LastCheckpointNote()}");
            return;
        }
        if (!nonFinite) _skippedInARow = 0;
        _zeroNormInARow = norm == 0 ? _zeroNormInARow + 1 : 0;
        if (_zeroNormInARow >= cfg.MaxSkippedSteps)
            throw new TrainingStoppedException($"the run diverged: gradient norm 0 for {_zeroNormInARow} optimizer steps in a row at loss {loss:F4} " +
                $"(ln(vocab_size {_vocab}) = {Math.Log(_vocab):F4}): the weights saturated; lower lr (now {cfg.Lr:G3}). {LastCheckpointNote()}");
    }

    // Several ranks: the micro-batch's loss averaged over ranks (a non-finite one anywhere poisons every rank's window), the
    // tokens summed, and whether any rank was asked to stop (all stop after the same iteration). ZeRO-2 moves the
    // gradients into the shards here, on every rank, even one whose loss was not finite (the collectives must match).
    private (float Loss, long Tokens) Synchronize(float loss, long tokens)
    {
        _dist!.AfterBackward();
        using var sums = Tensor.FromArray(_device, [loss, tokens, _options.Stop.IsCancellationRequested ? 1f : 0f], 3);
        _comm!.AllReduce(sums, ReduceOp.Sum);
        var v = sums.ToFloatArray();
        float global = v[0] / _comm.WorldSize;
        if (!float.IsFinite(global)) _windowNonFinite = true;
        _stopAgreed = v[2] > 0;
        return (global, (long)v[1]);
    }

    // Every rank waits here until all have come (a 1-element all-reduce).
    private void Barrier()
    {
        using var t = Tensor.Zeros(_device, DType.F32, 1);
        _comm!.AllReduce(t, ReduceOp.Sum);
        _device.Synchronize();
    }

    private string LastCheckpointNote() =>
        Checkpoint.List(_workDir).Count > 0 ? $"Last complete checkpoint: {Checkpoint.Resolve(_workDir, null)}" : "No checkpoint was saved.";

    private void Evaluate(string when)
    {
        if (!_evaluator.Enabled || !_rank0) return;
        foreach (var (input, answer) in _evaluator.Run(_model))
            _log.Info($"Sample output ({when}):\n{input}\n--> {answer}\n");
    }

    private void Save(int done)
    {
        // Several ranks: pending gradients averaged and ZeRO's shards gathered, on every rank (collectives).
        _dist?.ConsolidateGrads();
        var optimizerState = _dist?.ExportState() ?? _optimizer.ExportState();
        _saved = done;
        if (!_rank0)
        {
            _dist?.AdoptGrads();
            return;
        }
        Checkpoint.Save(_workDir, new CheckpointState(done, _steps, _cfg.Seed,
                _scaler.Enabled ? (JsonObject)JsonSerializer.SerializeToNode(_scaler.ExportState(), TrainingJson.Default.GradScalerState)! : [],
                _cfg.Source, Path.GetFullPath(_modelDir), _loraState, _lastNorm, _runId, _logDirs, _windowNonFinite),
            _trainable, optimizerState, _cfg.SaveTotalLimit);
        _dist?.AdoptGrads();
        _log.Info($"saved checkpoint {Checkpoint.DirFor(_workDir, done)}");
    }

    /// <summary>The trained LoRA as a PEFT adapter folder, work_dir/adapter (written whole or not at all); null for full fine-tuning.</summary>
    private string? Export()
    {
        if (_cfg.Lora is null) return null;
        string adapterDir = Path.Combine(_workDir, "adapter");
        AtomicDirectory.Write(adapterDir, tmp => PeftAdapter.Save(tmp, _model, Path.GetFullPath(_modelDir)));
        _log.Info($"adapter written to {adapterDir}");
        return adapterDir;
    }

    public void Dispose()
    {
        _log.Dispose();
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _lock?.Dispose();
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
