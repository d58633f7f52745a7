// TrainRun's preference hooks (train with `preference: dpo | orpo`): the pair data, the micro-batch loss and the logged
// rewards/*, logps/* values averaged over each logging window.
using IlgpuTune.Core;
using IlgpuTune.Data;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Preference;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Training.Preference;

namespace IlgpuTune.Training;

public sealed partial class TrainRun
{
    private readonly PreferenceObjective? _preference;
    private readonly Dictionary<string, double> _windowMetrics = [];
    private int _windowMetricCount;

    private string PreferenceCacheSuffix() => _preference is null ? "" : $"-{_cfg.Preference}-pairs";

    // Pairs read, each side encoded to max_length / 2 tokens, packed chosen-then-rejected into rows of max_length.
    private (List<PackedRow>, PackStats) PreparePreferenceData(DataOptions o, ITokenizer tokenizer)
    {
        var pairs = PreferenceData.Read(o.DataFiles, o.MaxErrors);
        if (pairs.Count == 0) throw new InvalidDataException($"{string.Join(", ", o.DataFiles)}: the dataset has no preference pair");
        var encoder = DataPipeline.CreateEncoder(o with { MaxLength = o.MaxLength / 2 }, tokenizer);
        var encoded = pairs.AsParallel().AsOrdered().Select(p => PreferenceData.Encode(p, encoder)).ToList();
        var (rows, stats) = PreferenceData.Pack(encoded, o.MaxLength, o.ShuffleBeforePack, o.Seed);
        if (rows.Count == 0)
            throw new InvalidDataException($"{string.Join(", ", o.DataFiles)}: no pair has a supervised response token on both sides " +
                $"after truncation to max_length / 2 = {o.MaxLength / 2} tokens");
        return (rows, stats);
    }

    private Tensor PreferenceLoss(int iter, Batch batch, Random rng)
    {
        int first = (iter % _itersPerEpoch) * _cfg.BatchSize;
        var rows = _order!.Skip(first).Take(batch.Size).ToList();
        var (loss, metrics) = _preference!.Loss(_model, _data, rows, batch, rng);
        foreach (var (k, v) in metrics) _windowMetrics[k] = _windowMetrics.GetValueOrDefault(k) + v;
        _windowMetricCount++;
        return loss;
    }

    private IReadOnlyDictionary<string, double>? TakeWindowMetrics()
    {
        if (_windowMetricCount == 0) return null;
        var mean = _windowMetrics.ToDictionary(kv => kv.Key, kv => kv.Value / _windowMetricCount);
        _windowMetrics.Clear();
        _windowMetricCount = 0;
        return mean;
    }
}
