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

    // Pair rows differ from SFT rows, and a reward model's from DPO's (the appended token).
    private string PreferenceCacheSuffix() => _preference is null ? "" : $"-{_cfg.Preference}-pairs{(_cfg.RewardTokenId is { } t ? $"-{t}" : "")}";

    // Pairs read, each side encoded to max_length / 2 tokens, packed chosen-then-rejected into rows of max_length.
    private (List<PackedRow>, PackStats) PreparePreferenceData(DataOptions o, ITokenizer tokenizer)
    {
        var pairs = PreferenceData.Read(o.DataFiles, o.MaxErrors);
        if (pairs.Count == 0) throw new InvalidDataException($"{string.Join(", ", o.DataFiles)}: the dataset has no preference pair");
        var encoder = DataPipeline.CreateEncoder(o with { MaxLength = o.MaxLength / 2 }, tokenizer);
        int? rewardToken = _preference!.IsReward ? RewardTokenId(tokenizer) : null;
        var encoded = pairs.AsParallel().AsOrdered().Select(p => PreferenceData.Encode(p, encoder, rewardToken)).ToList();
        var (rows, stats) = PreferenceData.Pack(encoded, o.MaxLength, o.ShuffleBeforePack, o.Seed);
        if (rows.Count == 0)
            throw new InvalidDataException($"{string.Join(", ", o.DataFiles)}: no pair has a supervised response token on both sides " +
                $"after truncation to max_length / 2 = {o.MaxLength / 2} tokens");
        return (rows, stats);
    }

    // reward_token_id, else the tokenizer's <|reward|> (XTuner adds it; our tokenizers are used as they are).
    private int RewardTokenId(ITokenizer tokenizer)
    {
        int id = _cfg.RewardTokenId ?? tokenizer.TokenToId("<|reward|>") ?? throw new ConfigException(
            $"reward_token_id: not set and the tokenizer of {_cfg.Tokenizer ?? _modelDir} has no <|reward|> token; set reward_token_id to a " +
            "special token the model does not otherwise use (XTuner's InternLM2 configs use 92527, [UNUSED_TOKEN_130])");
        if (id >= _vocab) throw new ConfigException($"reward_token_id: {id} is outside the model's vocabulary (vocab_size {_vocab})");
        return id;
    }

    // A reward model's value head trains with the model (full or LoRA) and is checkpointed as v_head.weight.
    private void AddPreferenceHead()
    {
        _preference?.AttachHead(_model, _cfg.Seed);
        if (_preference?.Head is not { } head) return;
        _trainable.Add(Own(head));
        // XTuner's reward model has no LM head: an untied one gets no gradient, so it is frozen (and not exported).
        if (!ReferenceEquals(_model.LmHead, _model.EmbedTokens) && _model.LmHead.RequiresGrad)
        {
            _model.LmHead.RequiresGrad = false;
            _trainable.Remove(_model.LmHead);
        }
    }

    // A reward model is also written whole, as transformers loads it (RewardModel.Export): work_dir/reward_model.
    private void ExportPreference()
    {
        if (_preference?.Head is not { } head) return;
        string dir = Path.Combine(_workDir, "reward_model");
        RewardModel.Export(_model, head, dir, _cfg.Tokenizer ?? _modelDir, RewardTokenId(Tokenizers.FromDirectory(_cfg.Tokenizer ?? _modelDir)));
        _log.Info($"reward model written to {dir} ({RewardModel.ExportClass(_model.Config.Architecture)}, num_labels 1)");
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
