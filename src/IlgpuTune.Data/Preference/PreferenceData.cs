// XTuner's preference data (xtuner/dataset/preference_dataset.py): one JSON record per pair,
//   {"prompt": [messages], "chosen": [messages], "rejected": [messages]}   (OpenAI message format)
// Each side is the conversation prompt + chosen (or + rejected), rendered with the run's template (an XTuner prompt
// template or a chat template) by the SFT encoder: the prompt's turns carry no loss, the response's assistant turns do.
// Truncation: each side is cut to max_length / 2 tokens (the encoder keeps the first tokens), so that a pair always fits
// one packed row; a pair with no supervised token left on either side is dropped. Packing: pairs are laid end to end,
// chosen then rejected, into rows of at most max_length tokens (first fit, longest pair first); CumulativeLengths marks
// every sequence, so no sequence attends to another, and sequence 2j / 2j+1 of a row are pair j's chosen / rejected.
// Reward models append the reward token to each side and supervise only it (label 0 chosen, 1 rejected, as XTuner).
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;

namespace IlgpuTune.Data.Preference;

/// <summary>One pair after mapping: the full conversations with the chosen and with the rejected response.</summary>
public sealed record PreferencePair(Conversation Chosen, Conversation Rejected, string Source);

/// <summary>An encoded pair, each side [tokens].</summary>
public sealed record EncodedPair(EncodedSample Chosen, EncodedSample Rejected);

public static class PreferenceData
{
    /// <summary>Reads .jsonl / .json files of pairs; every bad record of every file is reported together.</summary>
    public static List<PreferencePair> Read(IReadOnlyList<string> dataFiles, int maxErrors = DatasetReader.DefaultMaxErrors)
    {
        var errors = new List<DatasetError>();
        var pairs = new List<PreferencePair>();
        foreach (string file in DatasetFiles.Expand(dataFiles))
        {
            if (!File.Exists(file)) throw new FileNotFoundException($"data file {file} does not exist");
            var records = Path.GetExtension(file).ToLowerInvariant() switch
            {
                ".jsonl" => JsonRecords.ReadJsonl(file, errors),
                ".json" => JsonRecords.ReadJsonArray(file, errors),
                _ => throw new InvalidDataException($"{file}: preference data is .jsonl or .json ({{\"prompt\", \"chosen\", \"rejected\"}} per record)"),
            };
            foreach (var r in records)
                if (Map(r, errors) is { } p) pairs.Add(p);
        }
        if (errors.Count > 0) throw new DatasetException(errors.Take(maxErrors).ToList(), errors.Count > maxErrors);
        return pairs;
    }

    /// <summary>One record -> a pair, or null with its problems added to <paramref name="errors"/>.</summary>
    public static PreferencePair? Map(RawRecord r, List<DatasetError> errors)
    {
        var v = r.Value;
        if (v.ValueKind != JsonValueKind.Object)
        {
            errors.Add(new(r.Location, "(record)", $"expected a JSON object with prompt, chosen and rejected, got {v.ValueKind}"));
            return null;
        }
        int before = errors.Count;
        JsonArray? Messages(string field)
        {
            if (!v.TryGetProperty(field, out var m) || m.ValueKind == JsonValueKind.Null)
                errors.Add(new(r.Location, field, "missing (a preference record has prompt, chosen and rejected message lists)"));
            else if (m.ValueKind != JsonValueKind.Array)
                errors.Add(new(r.Location, field, $"expected an array of messages, got {m.ValueKind}"));
            else return (JsonArray)JsonNode.Parse(m.GetRawText())!;
            return null;
        }
        var prompt = Messages("prompt");
        var chosen = Messages("chosen");
        var rejected = Messages("rejected");
        if (errors.Count > before) return null;
        if (prompt!.Count == 0) errors.Add(new(r.Location, "prompt", "empty message list"));
        foreach (var (name, side) in new[] { ("chosen", chosen!), ("rejected", rejected!) })
            if (!side.Any(m => m is JsonObject o && o["role"]?.GetValueKind() == JsonValueKind.String && (string?)o["role"] == "assistant"))
                errors.Add(new(r.Location, name, "no assistant message (the response to prefer or reject)"));
        if (errors.Count > before) return null;
        Conversation? Side(JsonArray response)
        {
            var messages = new JsonArray();
            // The prompt's own assistant turns are context: no loss on them.
            foreach (var m in prompt!)
            {
                var copy = m!.DeepClone();
                if (copy is JsonObject o && (string?)o["role"] == "assistant") o["loss"] = false;
                messages.Add(copy);
            }
            foreach (var m in response) messages.Add(m!.DeepClone());
            using var doc = JsonDocument.Parse(new JsonObject { ["messages"] = messages }.ToJsonString());
            return DatasetMapFns.Map(new RawRecord(doc.RootElement.Clone(), r.Location), DatasetFormat.OpenAI, errors);
        }
        var c = Side(chosen!);
        var rj = Side(rejected!);
        return c is null || rj is null || errors.Count > before ? null : new PreferencePair(c, rj, r.Location);
    }

    /// <summary>
    /// Encodes both sides with <paramref name="encoder"/> (built for max_length / 2, which truncates); for a reward model,
    /// appends <paramref name="rewardTokenId"/> to each side and supervises only it (label 0 chosen, 1 rejected).
    /// </summary>
    public static EncodedPair Encode(PreferencePair pair, ISampleEncoder encoder, int? rewardTokenId = null)
    {
        var c = encoder.Encode(pair.Chosen);
        var r = encoder.Encode(pair.Rejected);
        if (rewardTokenId is not { } id) return new(c, r);
        EncodedSample Reward(EncodedSample s, int label)
        {
            // The reward token replaces the last token when the side is already at the length limit.
            int keep = s.Truncated ? s.InputIds.Length - 1 : s.InputIds.Length;
            var ids = s.InputIds.Take(keep).Append(id).ToArray();
            var labels = Enumerable.Repeat(EncodedSample.IgnoreIndex, keep).Append(label).ToArray();
            return new(ids, labels, s.Truncated);
        }
        return new(Reward(c, 0), Reward(r, 1));
    }

    /// <summary>
    /// Packs pairs into rows of at most <paramref name="maxLength"/> tokens, chosen then rejected, first fit with the
    /// longest pair first (after a seeded shuffle). Pairs without a supervised token on both sides are dropped.
    /// SampleIndices holds 2·pair (chosen) and 2·pair + 1 (rejected).
    /// </summary>
    public static (List<PackedRow> Rows, PackStats Stats) Pack(IReadOnlyList<EncodedPair> pairs, int maxLength, bool shuffle, ulong seed)
    {
        var order = new List<int>();
        int dropped = 0, truncated = 0;
        for (int i = 0; i < pairs.Count; i++)
        {
            var p = pairs[i];
            if (p.Chosen.InputIds.Length + p.Rejected.InputIds.Length > maxLength)
                throw new ArgumentException($"pair {i} is longer than max_length {maxLength}; encode each side to max_length / 2 first");
            if (p.Chosen.Truncated || p.Rejected.Truncated) truncated++;
            if (!p.Chosen.HasLoss || !p.Rejected.HasLoss) dropped++;
            else order.Add(i);
        }
        if (shuffle) new Random(unchecked((int)seed)).Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(order));
        int Len(int i) => pairs[i].Chosen.InputIds.Length + pairs[i].Rejected.InputIds.Length;
        var sorted = order.OrderByDescending(Len).ToList();
        var members = new List<List<int>>();
        var room = new List<int>();
        foreach (int i in sorted)
        {
            int row = room.FindIndex(left => left >= Len(i));
            if (row < 0)
            {
                row = members.Count;
                members.Add([]);
                room.Add(maxLength);
            }
            members[row].Add(i);
            room[row] -= Len(i);
        }
        var rows = new List<PackedRow>();
        long tokens = 0;
        foreach (var m in members)
        {
            var ids = new List<int>();
            var labels = new List<int>();
            var pos = new List<int>();
            var cu = new List<int> { 0 };
            var samples = new List<int>();
            foreach (int i in m)
                foreach (var (s, side) in new[] { (pairs[i].Chosen, 0), (pairs[i].Rejected, 1) })
                {
                    ids.AddRange(s.InputIds);
                    labels.Add(EncodedSample.IgnoreIndex); // never predict a sequence's first token from the one before
                    labels.AddRange(s.Labels.Skip(1));
                    pos.AddRange(Enumerable.Range(0, s.InputIds.Length));
                    cu.Add(ids.Count);
                    samples.Add(2 * i + side);
                }
            tokens += ids.Count;
            rows.Add(new PackedRow([.. ids], [.. labels], [.. cu], [.. pos], [.. samples]));
        }
        return (rows, new PackStats(rows.Count, pairs.Count, dropped, truncated, tokens, maxLength));
    }
}
