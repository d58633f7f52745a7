// The loss of a preference run's micro-batch (XTuner's DPO / ORPO compute_loss on packed rows): the policy's per-token
// log-probs come from one forward through the fused projection (Ops.LinearLogProbs, no [tokens, vocab] logits), are summed
// (or averaged, ipo / ORPO) per sequence on the host, and PreferenceLoss turns them into the loss and dLoss/dlogp per
// token, which one tape entry hands back to the fused op's backward.
// DPO's reference is the same base model: with LoRA the adapters are switched off (no second copy of the weights); its
// log-probs do not change during the run, so they are computed once, before the first step, for every row (with the
// adapters off, or from the untouched weights of full fine-tuning) and kept in the work dir (reference_logps.json), which
// a resumed run reads back (full fine-tuning cannot recompute them from trained weights).
using System.Text.Json;
using IlgpuTune.Core;
using IlgpuTune.Data.Packing;
using IlgpuTune.Model;
using IlgpuTune.Numerics;

namespace IlgpuTune.Training.Preference;

public sealed class PreferenceObjective
{
    public const string ReferenceFile = "reference_logps.json";
    private readonly string _kind;
    private readonly double _beta, _labelSmoothing;
    private readonly DpoLossType _lossType;
    private readonly RewardLossType _rewardLoss;
    private readonly RewardPenalty _penalty;
    private readonly double _penaltyWeight;
    private Dictionary<int, double[]>? _reference; // row -> summed log-prob of each of its sequences

    public PreferenceObjective(TrainConfig cfg)
    {
        _kind = cfg.Preference;
        (_beta, _labelSmoothing) = (cfg.Beta, cfg.LabelSmoothing);
        bool reward = _kind == "reward";
        string lossType = cfg.LossType ?? (reward ? "ranking" : "sigmoid");
        if (reward != lossType is "ranking" or "focal")
            throw new ConfigException(reward
                ? $"loss_type: '{lossType}' is a DPO loss; preference: reward takes ranking or focal"
                : $"loss_type: '{lossType}' is a reward-model loss; preference: {_kind} takes sigmoid, robust, hinge, ipo, kto_pair, sppo_hard or nca_pair");
        if (reward) _rewardLoss = lossType == "focal" ? RewardLossType.Focal : RewardLossType.Ranking;
        else _lossType = PreferenceLoss.ParseDpo(lossType);
        _penalty = cfg.PenaltyType switch { "log_barrier" => RewardPenalty.LogBarrier, "L2" => RewardPenalty.L2, _ => RewardPenalty.None };
        _penaltyWeight = cfg.PenaltyWeight;
    }

    public bool IsReward => _kind == "reward";

    /// <summary>The reward model's value head (trainable, saved in checkpoints as v_head.weight); null for DPO / ORPO.</summary>
    public Tensor? Head { get; private set; }

    /// <summary>Reward model: creates the value head for <paramref name="model"/>.</summary>
    public void AttachHead(CausalLM model, int seed)
    {
        if (IsReward) Head = RewardModel.CreateHead(model.Device, model.Config.HiddenSize, seed);
    }

    public bool NeedsReference => _kind == "dpo";

    /// <summary>
    /// DPO: a resumed run reads the work dir's reference log-probs for this dataset (<paramref name="key"/>); a fresh one
    /// computes them for every row and writes them. A resumed full fine-tuning run without them cannot go on.
    /// </summary>
    public void PrepareReference(CausalLM model, PackedCache data, string workDir, string key, bool resuming, bool lora, Action<string> log)
    {
        if (!NeedsReference) return;
        string path = Path.Combine(workDir, ReferenceFile);
        // A fresh run computes them (an old file may belong to another model); a resumed one reads what its first launch kept.
        if (resuming && File.Exists(path) && JsonSerializer.Deserialize(File.ReadAllText(path), TrainingJson.Default.ReferenceLogps) is { } saved && saved.Key == key && saved.Rows.Length == data.RowCount)
        {
            _reference = saved.Rows.Select((r, i) => (r, i)).ToDictionary(x => x.i, x => x.r);
            log($"DPO reference log-probs read from {path}");
            return;
        }
        if (resuming && !lora)
            throw new InvalidDataException($"{path}: missing or for another dataset; a resumed full fine-tuning DPO run needs the reference log-probs " +
                "computed before its first step (the weights have moved since)");
        var rows = new double[data.RowCount][];
        using (Tape.NoGrad())
        using (model.DisableAdapters())
            for (int r = 0; r < rows.Length; r++)
            {
                var row = data.GetRow(r);
                int len = row.InputIds.Length;
                var seg = Segments(row, len);
                using var logp = model.TokenLogProbs(row.InputIds, row.Labels, 1, len, row.PositionIds, seg);
                rows[r] = SequenceSums(logp.ToFloatArray(), row.CumulativeLengths, 0).Sums;
            }
        _reference = rows.Select((r, i) => (r, i)).ToDictionary(x => x.i, x => x.r);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(new ReferenceLogps(key, rows), TrainingJson.Default.ReferenceLogps));
        log($"DPO reference log-probs of {rows.Length} rows computed with the {(lora ? "adapters switched off" : "initial weights")}, kept in {path}");
    }

    // Scores at the reward tokens (label 0: chosen, 1: rejected; packed chosen then rejected) -> the ranking loss + penalty.
    private (Tensor, IReadOnlyDictionary<string, double>) RewardLoss(CausalLM model, Batch batch, Random rng)
    {
        var positions = Enumerable.Range(0, batch.Labels.Length).Where(i => batch.Labels[i] >= 0).ToArray();
        using var scores = RewardModel.Scores(model, Head!, batch.InputIds, batch.Size, batch.Length, batch.PositionIds, batch.SegmentIds, positions, rng);
        var s = scores.ToFloatArray();
        var chosen = positions.Select((p, i) => (p, i)).Where(x => batch.Labels[x.p] == 0).Select(x => x.i).ToArray();
        var rejected = positions.Select((p, i) => (p, i)).Where(x => batch.Labels[x.p] == 1).Select(x => x.i).ToArray();
        if (chosen.Length != rejected.Length) throw new InvalidDataException($"reward batch: {chosen.Length} chosen and {rejected.Length} rejected reward tokens");
        var result = PreferenceLoss.Reward(_rewardLoss, _penalty, _penaltyWeight, chosen.Select(i => (double)s[i]).ToArray(),
            rejected.Select(i => (double)s[i]).ToArray());
        var d = new float[s.Length];
        for (int i = 0; i < chosen.Length; i++) (d[chosen[i]], d[rejected[i]]) = ((float)result.DChosen[i], (float)result.DRejected[i]);
        var dev = scores.Device;
        var loss = Tensor.FromArray(dev, [(float)result.Loss]);
        if (!Tape.IsRecording(scores)) return (loss, result.Metrics);
        Tape.Record("reward_loss", [scores], [loss], ctx =>
        {
            float dLoss = ctx.GradOutput()!.Item();
            ctx.AddGrad(0, Tensor.FromArray(dev, d.Select(v => v * dLoss).ToArray(), d.Length));
        });
        return (loss, result.Metrics);
    }

    internal sealed record ReferenceLogps(string Key, double[][] Rows);

    private static int[] Segments(PackedRow row, int len)
    {
        var seg = new int[len];
        for (int s = 0; s + 1 < row.CumulativeLengths.Length; s++)
            for (int t = row.CumulativeLengths[s]; t < row.CumulativeLengths[s + 1]; t++) seg[t] = s;
        return seg;
    }

    // Sum and supervised-token count of each sequence of one row, from logp at offset `at` of the batch.
    private static (double[] Sums, int[] Counts) SequenceSums(float[] logp, int[] cu, int at, int[]? targets = null)
    {
        int n = cu.Length - 1;
        var sums = new double[n];
        var counts = new int[n];
        for (int s = 0; s < n; s++)
            for (int t = cu[s]; t < cu[s + 1]; t++)
            {
                sums[s] += logp[at + t];
                if (targets is not null && targets[at + t] != Ops.IgnoreIndex) counts[s]++;
            }
        return (sums, counts);
    }

    /// <summary>
    /// The micro-batch's loss (a scalar on the tape) and its logged values. <paramref name="rows"/>: the packed cache's
    /// row index of each batch row.
    /// </summary>
    public (Tensor Loss, IReadOnlyDictionary<string, double> Metrics) Loss(CausalLM model, PackedCache data, IReadOnlyList<int> rows, Batch batch, Random rng)
    {
        if (IsReward) return RewardLoss(model, batch, rng);
        var logp = model.TokenLogProbs(batch.InputIds, batch.Labels, batch.Size, batch.Length, batch.PositionIds, batch.SegmentIds, rng);
        var host = logp.ToFloatArray();
        var targets = CausalLM.ShiftLabels(batch.Labels, batch.Size, batch.Length, batch.SegmentIds);
        // Every pair of the batch: where its sequences are (batch row, cu range) and their sums / counts.
        var spans = new List<(int At, int From, int To, int Count)>();
        var pc = new List<double>();
        var pr = new List<double>();
        var rc = new List<double>();
        var rr = new List<double>();
        for (int b = 0; b < rows.Count; b++)
        {
            var cu = data.GetRow(rows[b]).CumulativeLengths;
            var (sums, counts) = SequenceSums(host, cu, b * batch.Length, targets);
            for (int s = 0; s < sums.Length; s++) spans.Add((b * batch.Length, cu[s], cu[s + 1], counts[s]));
            for (int s = 0; s + 1 < sums.Length; s += 2)
            {
                bool average = _kind == "orpo" || PreferenceLoss.AveragesLogProbs(_lossType);
                double Avg(double v, int c) => average ? v / Math.Max(c, 1) : v;
                pc.Add(Avg(sums[s], counts[s]));
                pr.Add(Avg(sums[s + 1], counts[s + 1]));
                if (_reference is { } refs)
                {
                    rc.Add(Avg(refs[rows[b]][s], counts[s]));
                    rr.Add(Avg(refs[rows[b]][s + 1], counts[s + 1]));
                }
            }
        }
        PreferenceLossResult result;
        double nll = 0;
        int chosenTokens = 0;
        if (_kind == "dpo")
            result = PreferenceLoss.Dpo(_lossType, _beta, _labelSmoothing, [.. pc], [.. pr], [.. rc], [.. rr]);
        else
        {
            // ORPO: NLL over every chosen token of the batch (token mean, as CrossEntropyLoss over the chosen rows) minus
            // β·mean log σ(log-odds ratio) of the mean log-probs.
            result = PreferenceLoss.OddsRatio(_beta, [.. pc], [.. pr]);
            for (int i = 0; i < spans.Count; i += 2) chosenTokens += spans[i].Count;
            for (int i = 0; i < spans.Count; i += 2)
                for (int t = spans[i].From; t < spans[i].To; t++) nll -= host[spans[i].At + t];
            nll /= Math.Max(chosenTokens, 1);
        }
        // dLoss/dlogp of each token: its sequence's gradient (÷ tokens for a mean), plus ORPO's NLL term on chosen tokens.
        var dRow = new float[host.Length];
        for (int i = 0; i < spans.Count; i++)
        {
            var (at, from, to, count) = spans[i];
            bool average = _kind == "orpo" || PreferenceLoss.AveragesLogProbs(_lossType);
            double g = (i % 2 == 0 ? result.DChosen : result.DRejected)[i / 2] / (average ? Math.Max(count, 1) : 1);
            if (_kind == "orpo" && i % 2 == 0) g -= 1.0 / Math.Max(chosenTokens, 1);
            for (int t = from; t < to; t++)
                if (targets[at + t] != Ops.IgnoreIndex) dRow[at + t] = (float)g;
        }
        var metrics = new Dictionary<string, double>(result.Metrics);
        if (_kind == "orpo") metrics["nll_loss"] = nll;
        var dev = logp.Device;
        var loss = Tensor.FromArray(dev, [(float)(result.Loss + nll)]);
        if (!Tape.IsRecording(logp))
        {
            logp.Dispose();
            return (loss, metrics);
        }
        Tape.Record("preference_loss", [logp], [loss], ctx =>
        {
            float dLoss = ctx.GradOutput()!.Item();
            ctx.AddGrad(0, Tensor.FromArray(dev, dRow.Select(v => v * dLoss).ToArray(), dRow.Length));
        }, logp);
        return (loss, metrics);
    }
}
