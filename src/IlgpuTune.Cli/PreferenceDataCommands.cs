// check-dataset / log-dataset for preference data (a config with preference: dpo | orpo | reward, or --format preference):
// XTuner's {"prompt", "chosen", "rejected"} records, each side encoded to max_length / 2 tokens and packed pair by pair.
using System.Text.Json;
using IlgpuTune.Data;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Preference;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Cli;

internal static class PreferenceDataCommands
{
    /// <summary>Whether the parameters name preference data; with the reward token when the config trains a reward model.</summary>
    public static bool Applies(DatasetParameters p, out int? rewardToken)
    {
        rewardToken = null;
        var cfg = p.Config is null ? null : IlgpuTune.Training.Builtins.LoadConfig(p.Config);
        if (p.Format is not "preference" && (p.Format is not null || cfg is null || cfg.Preference == "none")) return false;
        if (cfg?.Preference == "reward") rewardToken = cfg.RewardTokenId ?? Tokenizers.FromDirectory(cfg.Tokenizer ?? cfg.PretrainedModelNameOrPath).TokenToId("<|reward|>");
        return true;
    }

    private static (DataOptions, ITokenizer, List<PreferencePair>, List<EncodedPair>, List<PackedRow>, PackStats) Load(DatasetParameters p, int? rewardToken)
    {
        var o = (p with { Format = p.Format is "preference" ? "openai" : p.Format }).ToOptions();
        var tok = Tokenizers.FromDirectory(o.TokenizerDir);
        var pairs = PreferenceData.Read(o.DataFiles, o.MaxErrors);
        var encoder = DataPipeline.CreateEncoder(o with { MaxLength = o.MaxLength / 2 }, tok);
        var encoded = pairs.Select(x => PreferenceData.Encode(x, encoder, rewardToken)).ToList();
        var (rows, stats) = PreferenceData.Pack(encoded, o.MaxLength, o.ShuffleBeforePack, o.Seed);
        return (o, tok, pairs, encoded, rows, stats);
    }

    public static int Check(DatasetParameters p, int? rewardToken)
    {
        var (o, _, pairs, encoded, rows, stats) = Load(p, rewardToken);
        Console.WriteLine($"files: {string.Join(", ", o.DataFiles)}");
        Console.WriteLine($"preference pairs: {pairs.Count}{(rewardToken is { } t ? $" (reward model: token {t} appended to each side)" : "")}");
        Console.WriteLine($"truncated to max_length / 2 = {o.MaxLength / 2} tokens per side: {stats.Truncated}; without a supervised token on both sides (dropped): {stats.DroppedNoLoss}");
        foreach (var (side, pick) in new (string, Func<EncodedPair, EncodedSample>)[] { ("chosen", e => e.Chosen), ("rejected", e => e.Rejected) })
        {
            var lengths = encoded.Select(e => pick(e).InputIds.Length).Order().ToArray();
            var supervised = encoded.Select(e => pick(e).Labels.Count(l => l >= 0)).Order().ToArray();
            if (lengths.Length > 0)
                Console.WriteLine($"{side}: tokens min {lengths[0]}, median {lengths[lengths.Length / 2]}, max {lengths[^1]}; " +
                    $"response tokens min {supervised[0]}, median {supervised[supervised.Length / 2]}, max {supervised[^1]}");
        }
        Console.WriteLine($"packed: {stats.Rows} rows of ≤ {o.MaxLength} tokens (chosen then rejected, no attention across sequences), fill ratio {stats.FillRatio:P1}");
        if (rows.Count == 0)
        {
            Console.Error.WriteLine($"error: no trainable pair: every pair lost its response to truncation at {o.MaxLength / 2} tokens per side");
            return 2;
        }
        return 0;
    }

    public static int Log(DatasetParameters p, int? rewardToken, string[] parts, int count, Func<ITokenizer, int[], string> masked)
    {
        var (_, tok, pairs, _, rows, _) = Load(p, rewardToken);
        foreach (var (row, k) in rows.Take(count).Select((r, k) => (r, k)))
        {
            Console.WriteLine($"==================== row {k}: {row.SampleIndices.Length / 2} pairs, {row.InputIds.Length} tokens ====================");
            for (int s = 0; s < row.SampleIndices.Length; s++)
            {
                int from = row.CumulativeLengths[s], to = row.CumulativeLengths[s + 1];
                Console.WriteLine($"---------- pair {pairs[row.SampleIndices[s] / 2].Source}: {(s % 2 == 0 ? "chosen" : "rejected")}, {to - from} tokens ----------");
                foreach (var part in parts)
                    Console.WriteLine($"[{part}] " + part switch
                    {
                        "text" => tok.Decode(row.InputIds[from..to]),
                        // A reward model's one label is 0 (chosen) or 1 (rejected), not a token id.
                        "masked_text" when rewardToken is not null => $"[-100 × {to - from - 1}][reward token, label {row.Labels[to - 1]}]",
                        "masked_text" => masked(tok, row.Labels[from..to]),
                        "input_ids" => JsonSerializer.Serialize(row.InputIds[from..to]),
                        _ => JsonSerializer.Serialize(row.Labels[from..to]),
                    });
            }
        }
        return 0;
    }
}
