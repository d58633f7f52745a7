// Training checkpoints: work_dir/iter_<N>/ holding the trainable weights, the optimizer state, gradients of a half-done
// accumulation window, and state.json (iteration, epoch position, optimizer steps, loss scaler, seed). A checkpoint is
// written into a temporary folder and renamed into place, then `last_checkpoint` is replaced atomically, so a kill -9 at
// any moment leaves either the old or the new checkpoint, never half of one, and last_checkpoint always names a complete
// one. Each run has an id (kept across resumes): save_total_limit keeps the newest of this run's checkpoints and never
// deletes another run's. A checkpoint never holds NaN/Inf weights or optimizer state.
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Training;

/// <param name="Model">The base model folder.</param>
/// <param name="Lora">null for full fine-tuning; else {r, lora_alpha, lora_dropout, use_rslora, modules: [adapted module names]}.</param>
/// <param name="LastGradNorm">The latest optimizer step's gradient norm, which the log keeps showing until the next step.</param>
/// <param name="RunId">The run that wrote it: a new run gets a new id, a resumed run keeps its checkpoint's.</param>
/// <param name="LogDirs">The run's launch folders (work_dir/YYYYmmdd_HHMMSS), oldest first: their scalars make its curve.</param>
/// <param name="WindowNonFinite">The half-done accumulation window had a non-finite loss or gradient (its step is skipped).</param>
public sealed record CheckpointState(int Iter, int OptimizerSteps, int Seed, JsonObject Scaler, string ConfigSource, string Model, JsonObject? Lora,
    float? LastGradNorm, string RunId = "", IReadOnlyList<string>? LogDirs = null, bool WindowNonFinite = false)
{
    public const int FormatVersion = 1;
}

public static class Checkpoint
{
    public const string LastCheckpointFile = "last_checkpoint";
    private const string Prefix = "iter_";

    public static string DirFor(string workDir, int iter) => Path.Combine(workDir, Prefix + iter);

    public static void Save(string workDir, CheckpointState state, IReadOnlyList<Tensor> trainable,
        IEnumerable<KeyValuePair<string, float[]>> optimizerState, int saveTotalLimit)
    {
        string final = DirFor(workDir, state.Iter);
        // Check before writing anything: a non-finite weight or moment would make the checkpoint useless.
        var weights = trainable.Select(t => (t.Name!, Data: Finite(t.ToFloatArray(), t.Name!, state.Iter), t.Shape)).ToList();
        var optimizer = optimizerState.Select(s => (s.Key, Data: Finite(s.Value, "optimizer state " + s.Key, state.Iter))).ToList();
        // Gradients of a half-done window that went non-finite are saved as zeros with the flag: the window's step is skipped anyway.
        bool windowNonFinite = state.WindowNonFinite;
        var grads = trainable.Where(t => t.Grad is not null).Select(t => (t.Name!, Data: t.Grad!.ToFloatArray(), t.Shape)).ToList();
        if (grads.Any(g => !AllFinite(g.Data)))
        {
            windowNonFinite = true;
            foreach (var g in grads) Array.Clear(g.Data);
        }
        string tmp = final + ".tmp-" + Guid.NewGuid().ToString("N");
        Directory.CreateDirectory(tmp);
        try
        {
            SafetensorsWriter.Write(Path.Combine(tmp, "trainable.safetensors"),
                weights.Select(t => SafetensorsWriter.F32(t.Item1, t.Data, t.Shape.Select(d => (long)d).ToArray())));
            if (grads.Count > 0)
                SafetensorsWriter.Write(Path.Combine(tmp, "grads.safetensors"),
                    grads.Select(t => SafetensorsWriter.F32(t.Item1, t.Data, t.Shape.Select(d => (long)d).ToArray())));
            SafetensorsWriter.Write(Path.Combine(tmp, "optimizer.safetensors"),
                optimizer.Select(s => SafetensorsWriter.F32(s.Key, s.Data, s.Data.Length)));
            var json = new JsonObject
            {
                ["format_version"] = CheckpointState.FormatVersion,
                ["iter"] = state.Iter,
                ["optimizer_steps"] = state.OptimizerSteps,
                ["seed"] = state.Seed,
                ["scaler"] = state.Scaler.DeepClone(),
                ["config"] = state.ConfigSource,
                ["model"] = state.Model,
                ["lora"] = state.Lora?.DeepClone(),
                ["last_grad_norm"] = state.LastGradNorm is { } n && float.IsFinite(n) ? n : null,
                ["run_id"] = state.RunId,
                ["log_dirs"] = new JsonArray((state.LogDirs ?? []).Select(d => (JsonNode)d).ToArray()),
                ["window_nonfinite"] = windowNonFinite,
            };
            AtomicFile.WriteAllText(Path.Combine(tmp, "state.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            if (Directory.Exists(final))
            {
                // Replacing a checkpoint of the same iteration (a run resumed from an earlier one): last_checkpoint must not
                // name it while it is swapped, so point it at the newest other complete checkpoint first.
                if (LastNamed(workDir) == Path.GetFileName(final) && List(workDir).LastOrDefault(c => c.Dir != final) is { Dir: { } other })
                    AtomicFile.WriteAllText(Path.Combine(workDir, LastCheckpointFile), Path.GetFileName(other) + "\n");
                Directory.Delete(final, recursive: true);
            }
            Directory.Move(tmp, final);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
        AtomicFile.WriteAllText(Path.Combine(workDir, LastCheckpointFile), Path.GetFileName(final) + "\n");
        Prune(workDir, state.RunId, saveTotalLimit);
    }

    // A finite sum means every element is finite (one inf or NaN makes it non-finite); an overflowing sum needs the full check.
    internal static bool AllFinite(float[] data) => float.IsFinite(System.Numerics.Tensors.TensorPrimitives.Sum(data)) || data.All(float.IsFinite);

    private static float[] Finite(float[] data, string name, int iter) => AllFinite(data) ? data
        : throw new TrainingStoppedException($"'{name}' holds NaN/Inf at iteration {iter}: not saved (the last complete checkpoint stays as it is)");

    private static string? LastNamed(string workDir)
    {
        string last = Path.Combine(workDir, LastCheckpointFile);
        return File.Exists(last) ? File.ReadAllText(last).Trim() : null;
    }

    /// <summary>
    /// Deletes leftovers of interrupted saves (the caller holds the work dir's lock, so none is in progress) and all but the
    /// newest <paramref name="keep"/> checkpoints of run <paramref name="runId"/>; -1 keeps all. Other runs' checkpoints stay.
    /// </summary>
    private static void Prune(string workDir, string runId, int keep)
    {
        foreach (var dir in Directory.GetDirectories(workDir, Prefix + "*.tmp-*")) Directory.Delete(dir, recursive: true);
        if (keep < 0) return;
        foreach (var (dir, _) in List(workDir).Where(c => ReadState(c.Dir).RunId == runId).SkipLast(keep)) Directory.Delete(dir, recursive: true);
    }

    /// <summary>Complete checkpoints, oldest first.</summary>
    public static List<(string Dir, int Iter)> List(string workDir) =>
        !Directory.Exists(workDir) ? [] : Directory.GetDirectories(workDir, Prefix + "*")
            .Select(d => (Dir: d, Ok: int.TryParse(Path.GetFileName(d)[Prefix.Length..], out int it), Iter: it))
            .Where(x => x.Ok && File.Exists(Path.Combine(x.Dir, "state.json")))
            .OrderBy(x => x.Iter).Select(x => (x.Dir, x.Iter)).ToList();

    /// <summary>The checkpoint to resume: <paramref name="path"/> if given, else the one last_checkpoint names, else the newest.</summary>
    public static string Resolve(string workDir, string? path)
    {
        if (!string.IsNullOrEmpty(path))
            return File.Exists(Path.Combine(path, "state.json")) ? path
                : throw new FileNotFoundException($"--resume {path}: not a checkpoint folder (no state.json)");
        string last = Path.Combine(workDir, LastCheckpointFile);
        if (File.Exists(last))
        {
            string dir = Path.Combine(workDir, File.ReadAllText(last).Trim());
            if (File.Exists(Path.Combine(dir, "state.json"))) return dir;
        }
        var all = List(workDir);
        return all.Count > 0 ? all[^1].Dir : throw new FileNotFoundException($"--resume: no checkpoint in {workDir}");
    }

    public static CheckpointState ReadState(string dir)
    {
        string file = Path.Combine(dir, "state.json");
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new InvalidDataException($"{file}: expected a JSON object");
            int version = o["format_version"]?.GetValue<int>() ?? 0;
            if (version != CheckpointState.FormatVersion)
                throw new InvalidDataException($"{file}: checkpoint format {version}, this build reads {CheckpointState.FormatVersion}");
            int Required(string key) => o[key]?.GetValue<int>() ?? throw new InvalidDataException($"{file}: key '{key}' is missing");
            return new CheckpointState(Required("iter"), Required("optimizer_steps"), Required("seed"),
                o["scaler"] as JsonObject ?? [], o["config"]?.GetValue<string>() ?? "", o["model"]?.GetValue<string>() ?? "",
                o["lora"] as JsonObject, o["last_grad_norm"]?.GetValue<float>(), o["run_id"]?.GetValue<string>() ?? "",
                o["log_dirs"] is JsonArray dirs ? dirs.Select(d => d!.GetValue<string>()).ToList() : [],
                o["window_nonfinite"]?.GetValue<bool>() ?? false);
        }
        // A truncated or hand-edited state.json: malformed JSON, or a value of the wrong type.
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new InvalidDataException($"{file}: not a valid checkpoint state ({e.Message})", e);
        }
    }

    /// <summary>Copies the checkpoint's trainable weights (and half-window grads) into the model's tensors, checking names and shapes.</summary>
    public static void LoadTrainable(string dir, IReadOnlyList<Tensor> trainable)
    {
        using var weights = SafetensorsFile.Open(Path.Combine(dir, "trainable.safetensors"));
        var expected = trainable.Select(t => t.Name!).ToHashSet();
        var extra = weights.Tensors.Select(t => t.Name).Where(n => !expected.Contains(n)).ToList();
        if (extra.Count > 0)
            throw new InvalidDataException($"{weights.Path}: tensors {string.Join(", ", extra.Take(5))} are not trainable in this run (different config?)");
        string gradsPath = Path.Combine(dir, "grads.safetensors");
        using var grads = File.Exists(gradsPath) ? SafetensorsFile.Open(gradsPath) : null;
        foreach (var t in trainable)
        {
            if (!weights.Contains(t.Name!)) throw new InvalidDataException($"{weights.Path}: missing trainable tensor '{t.Name}'");
            var info = weights.Get(t.Name!);
            if (!info.Shape.SequenceEqual(t.Shape.Select(d => (long)d)))
                throw new InvalidDataException($"{weights.Path}: '{t.Name}' has shape [{string.Join(", ", info.Shape)}], the model has [{string.Join(", ", t.Shape)}]");
            t.CopyFrom(weights.ReadFloat32(t.Name!));
            t.Grad?.Dispose();
            t.Grad = grads is not null && grads.Contains(t.Name!) ? Tensor.FromArray(t.Device, grads.ReadFloat32(t.Name!), t.Shape) : null;
        }
    }

    public static Dictionary<string, float[]> ReadOptimizer(string dir)
    {
        using var f = SafetensorsFile.Open(Path.Combine(dir, "optimizer.safetensors"));
        return f.Tensors.ToDictionary(t => t.Name, t => f.ReadFloat32(t.Name));
    }
}

/// <summary>`convert adapter`: a checkpoint's trainable weights as a PEFT adapter folder (LoRA) or a full HF model folder.</summary>
public static class CheckpointExport
{
    public static string Run(string checkpointDir, string outDir, DType dtype, long? maxShardBytes = null)
    {
        var state = Checkpoint.ReadState(checkpointDir);
        using var weights = SafetensorsFile.Open(Path.Combine(checkpointDir, "trainable.safetensors"));
        var tensors = weights.Tensors.Select(t => (t.Name, weights.ReadFloat32(t.Name), t.Shape.Select(d => (int)d).ToArray()));
        if (state.Lora is { } l)
        {
            var lora = new IlgpuTune.Model.LoraConfig(l["r"]!.GetValue<int>(), (float)l["lora_alpha"]!.GetValue<double>(),
                (float)l["lora_dropout"]!.GetValue<double>(), [], l["use_rslora"]!.GetValue<bool>());
            var modules = l["modules"]!.AsArray().Select(n => n!.GetValue<string>()).ToList();
            // Written as a temp folder renamed into place: Ctrl-C or a failure leaves no partial adapter.
            AtomicDirectory.Write(outDir, tmp => IlgpuTune.Model.PeftAdapter.Write(tmp, lora, modules, tensors, state.Model, dtype));
            return $"PEFT adapter ({weights.Tensors.Count} tensors) -> {outDir}";
        }
        // Full fine-tuning: every weight was trainable. Put them into the base model and export it as HF does (config with
        // the new dtype, tokenizer and remote-code files, sharded weights).
        using var device = Device.Create("cpu");
        using var model = IlgpuTune.Model.ModelLoader.Load(state.Model, device);
        model.SetFullFineTuning();
        Checkpoint.LoadTrainable(checkpointDir, model.TrainableParameters.ToList());
        var files = IlgpuTune.Model.HfExport.Save(model, outDir, dtype, maxShardBytes ?? SafetensorsWriter.ParseSize("5GB"), state.Model);
        return $"full model ({model.Parameters.Count} tensors, {files.Count} files) -> {outDir}";
    }
}
