// The training rows of a config: records read with the dataset map fn, encoded as XTuner's encode_fn, packed (never
// splitting a sample) or kept one sample a row, and cached on disk keyed by everything that shapes them.
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Training;

public static class TrainingData
{
    public static PackedCache Prepare(TrainConfig cfg, ITokenizer tokenizer, PromptTemplate? template, IReadOnlyList<string> tokenizerFiles,
        string cacheDir, Action<string> log)
    {
        var format = DatasetMapFns.Parse(cfg.DatasetMapFn);
        foreach (var f in cfg.DataPath)
            if (!File.Exists(f)) throw new FileNotFoundException($"data_path: {f} does not exist", f);
        string key = PackedCache.Key(cfg.DataPath, tokenizerFiles, template?.Name ?? "none", format + (cfg.PackToMaxLength ? "+pack" : ""),
            cfg.MaxLength, cfg.ShuffleBeforePack, (ulong)cfg.Seed);
        var cached = PackedCache.TryOpen(cacheDir, key);
        if (cached is not null)
        {
            log($"dataset: {cached.Stats.Rows} rows from cache {PackedCache.PathFor(cacheDir, key)}");
            return cached;
        }
        var samples = new List<EncodedSample>();
        var encoder = new XtunerEncoder(tokenizer, template, cfg.MaxLength);
        int dropped = 0;
        foreach (var f in cfg.DataPath)
        {
            var (conversations, d) = DatasetReader.Read(f, format);
            dropped += d;
            samples.AddRange(conversations.Select(encoder.Encode));
        }
        var (rows, stats) = cfg.PackToMaxLength
            ? Packer.Pack(samples, cfg.MaxLength, cfg.ShuffleBeforePack, (ulong)cfg.Seed)
            : OnePerRow(samples, cfg.MaxLength);
        log($"dataset: {samples.Count} samples ({dropped} dropped by the map fn, {stats.DroppedNoLoss} without loss, " +
            $"{stats.Truncated} truncated to {cfg.MaxLength}) -> {stats.Rows} rows, fill {stats.FillRatio:P1}");
        if (stats.Rows == 0) throw new InvalidDataException($"{string.Join(", ", cfg.DataPath)}: no trainable sample (every label is -100?)");
        return PackedCache.Write(cacheDir, key, rows, stats);
    }

    // pack_to_max_length = false: every sample is its own row (samples without loss are dropped, as XTuner does).
    private static (List<PackedRow>, PackStats) OnePerRow(List<EncodedSample> samples, int maxLength)
    {
        var rows = new List<PackedRow>();
        long tokens = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var s = samples[i];
            if (!s.HasLoss) continue;
            int n = s.InputIds.Length;
            rows.Add(new PackedRow(s.InputIds, s.Labels, [0, n], Enumerable.Range(0, n).ToArray(), [i]));
            tokens += n;
        }
        return (rows, new PackStats(rows.Count, rows.Count, samples.Count - rows.Count, samples.Count(s => s.Truncated), tokens, maxLength));
    }
}
