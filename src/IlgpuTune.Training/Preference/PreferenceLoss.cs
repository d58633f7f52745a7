// The preference losses of XTuner v0.1.22 (xtuner/model/dpo.py, orpo.py, reward.py) on per-sequence scores, in float64 with
// their gradients written out by hand: the model side (Ops.LinearLogProbs, summed per sequence) hands in the policy's
// and the reference's log-probs of each chosen and rejected sequence, gets back the batch loss (mean over pairs, as
// mmengine reduces XTuner's per-pair loss) and dLoss/dscore of every policy sequence, and back-propagates those.
namespace IlgpuTune.Training.Preference;

/// <summary>XTuner's DPO loss_type values.</summary>
public enum DpoLossType { Sigmoid, Robust, Hinge, Ipo, KtoPair, SppoHard, NcaPair }

/// <summary>Reward-model ranking loss (reward.py loss_type) and score penalty (penalty_type).</summary>
public enum RewardLossType { Ranking, Focal }

public enum RewardPenalty { None, LogBarrier, L2 }

/// <summary>
/// A batch loss and its gradient w.r.t. each chosen / rejected score, with TRL-style logged values (rewards/chosen,
/// rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected; and for ORPO log_odds_ratio,
/// log_odds_chosen).
/// </summary>
public sealed record PreferenceLossResult(double Loss, double[] DChosen, double[] DRejected, IReadOnlyDictionary<string, double> Metrics);

public static class PreferenceLoss
{
    public static DpoLossType ParseDpo(string name) => name switch
    {
        "sigmoid" => DpoLossType.Sigmoid, "robust" => DpoLossType.Robust, "hinge" => DpoLossType.Hinge, "ipo" => DpoLossType.Ipo,
        "kto_pair" => DpoLossType.KtoPair, "sppo_hard" => DpoLossType.SppoHard, "nca_pair" => DpoLossType.NcaPair,
        _ => throw new ArgumentException($"'{name}' is not a DPO loss_type; expected one of sigmoid, robust, hinge, ipo, kto_pair, sppo_hard, nca_pair"),
    };

    /// <summary>ipo compares per-token average log-probs; every other DPO loss compares summed ones.</summary>
    public static bool AveragesLogProbs(DpoLossType type) => type == DpoLossType.Ipo;

    static double LogSigmoid(double z) => z >= 0 ? -Math.Log(1 + Math.Exp(-z)) : z - Math.Log(1 + Math.Exp(z));
    static double Sigmoid(double z) => z >= 0 ? 1 / (1 + Math.Exp(-z)) : Math.Exp(z) / (1 + Math.Exp(z));

    /// <summary>
    /// DPO and its variants (dpo.py compute_loss): logits = (πc - πr) - (refc - refr); rewards = β(π - ref).
    /// Inputs: policy / reference log-probs of each pair's chosen and rejected sequence [pairs].
    /// </summary>
    public static PreferenceLossResult Dpo(DpoLossType type, double beta, double labelSmoothing,
        double[] policyChosen, double[] policyRejected, double[] refChosen, double[] refRejected)
    {
        int n = policyChosen.Length;
        if (n == 0 || policyRejected.Length != n || refChosen.Length != n || refRejected.Length != n)
            throw new ArgumentException($"DPO needs the same number (> 0) of chosen and rejected log-probs, got {n}, {policyRejected.Length}, {refChosen.Length}, {refRejected.Length}");
        var dc = new double[n];
        var dr = new double[n];
        double loss = 0, eps = labelSmoothing;
        var a = new double[n]; // chosen log-ratio π - ref
        var b = new double[n]; // rejected log-ratio
        for (int i = 0; i < n; i++) (a[i], b[i]) = (policyChosen[i] - refChosen[i], policyRejected[i] - refRejected[i]);
        if (type == DpoLossType.KtoPair)
        {
            // eqn (7) of the HALOs paper: the KL of one half is estimated from the other half's mean log-ratio, clamped at 0;
            // the 2n losses are averaged.
            double meanA = a.Average(), meanB = b.Average();
            double chosenKl = Math.Max(meanA, 0), rejectedKl = Math.Max(meanB, 0);
            double dChosenKl = 0, dRejectedKl = 0;
            for (int i = 0; i < n; i++)
            {
                double s1 = Sigmoid(beta * (a[i] - rejectedKl)), s2 = Sigmoid(beta * (chosenKl - b[i]));
                loss += (1 - s1) + (1 - s2);
                double g1 = -s1 * (1 - s1) * beta / (2 * n), g2 = -s2 * (1 - s2) * beta / (2 * n);
                dc[i] += g1;
                dRejectedKl -= g1;
                dr[i] -= g2;
                dChosenKl += g2;
            }
            loss /= 2 * n;
            // clamp(min=0) passes the gradient where the mean is >= 0, as torch's clamp backward does.
            for (int i = 0; i < n; i++)
            {
                if (meanA >= 0) dc[i] += dChosenKl / n;
                if (meanB >= 0) dr[i] += dRejectedKl / n;
            }
        }
        else
        {
            for (int i = 0; i < n; i++)
            {
                double logits = a[i] - b[i], z = beta * logits;
                double l, dLogits, dA = 0, dB = 0;
                switch (type)
                {
                    case DpoLossType.Sigmoid:
                        l = -LogSigmoid(z) * (1 - eps) - LogSigmoid(-z) * eps;
                        dLogits = beta * (-(1 - eps) * Sigmoid(-z) + eps * Sigmoid(z));
                        break;
                    case DpoLossType.Robust:
                        l = (-LogSigmoid(z) * (1 - eps) + LogSigmoid(-z) * eps) / (1 - 2 * eps);
                        dLogits = beta * (-(1 - eps) * Sigmoid(-z) - eps * Sigmoid(z)) / (1 - 2 * eps);
                        break;
                    case DpoLossType.Hinge:
                        l = Math.Max(0, 1 - z);
                        dLogits = 1 - z > 0 ? -beta : 0;
                        break;
                    case DpoLossType.Ipo:
                        l = Math.Pow(logits - 1 / (2 * beta), 2);
                        dLogits = 2 * (logits - 1 / (2 * beta));
                        break;
                    case DpoLossType.SppoHard:
                        l = Math.Pow(a[i] - 0.5 / beta, 2) + Math.Pow(b[i] + 0.5 / beta, 2);
                        (dLogits, dA, dB) = (0, 2 * (a[i] - 0.5 / beta), 2 * (b[i] + 0.5 / beta));
                        break;
                    default: // NcaPair
                        double cr = beta * a[i], rr = beta * b[i];
                        l = -LogSigmoid(cr) - 0.5 * LogSigmoid(-cr) - 0.5 * LogSigmoid(-rr);
                        (dLogits, dA, dB) = (0, beta * (-Sigmoid(-cr) + 0.5 * Sigmoid(cr)), beta * 0.5 * Sigmoid(rr));
                        break;
                }
                loss += l / n;
                dc[i] = (dLogits + dA) / n;
                dr[i] = (-dLogits + dB) / n;
            }
        }
        return new(loss, dc, dr, Rewards(a.Select(x => beta * x).ToArray(), b.Select(x => beta * x).ToArray(), policyChosen, policyRejected));
    }

    /// <summary>
    /// ORPO's odds-ratio term (orpo.py odds_ratio_loss) on mean token log-probs c, r [pairs]: log_odds = (c - r) -
    /// (log(1 - e^c) - log(1 - e^r)); returns -β·mean(log σ(log_odds)) over the pairs whose term is finite (XTuner drops NaN
    /// ones), so the run's loss is NLL(chosen) + this. Rewards are β·c and β·r.
    /// </summary>
    public static PreferenceLossResult OddsRatio(double beta, double[] chosenMean, double[] rejectedMean)
    {
        int n = chosenMean.Length;
        if (n == 0 || rejectedMean.Length != n) throw new ArgumentException($"ORPO needs as many chosen as rejected log-probs (> 0), got {n} and {rejectedMean.Length}");
        var dc = new double[n];
        var dr = new double[n];
        var logOdds = new double[n];
        var valid = new List<int>();
        for (int i = 0; i < n; i++)
        {
            double c = chosenMean[i], r = rejectedMean[i];
            logOdds[i] = c - r - (Math.Log(-double.ExpM1(c)) - Math.Log(-double.ExpM1(r)));
            if (double.IsFinite(LogSigmoid(logOdds[i]))) valid.Add(i);
        }
        double loss = 0, ratioSum = 0;
        foreach (int i in valid)
        {
            double ratio = LogSigmoid(logOdds[i]);
            ratioSum += ratio;
            loss -= beta * ratio / valid.Count;
            double dLogOdds = -beta * Sigmoid(-logOdds[i]) / valid.Count;
            if (dLogOdds == 0) continue; // a saturated pair (log_odds = +inf): no gradient, not 0 · inf
            // d log_odds / dc = 1 + e^c / (1 - e^c) = 1 / (1 - e^c)
            dc[i] = dLogOdds / -double.ExpM1(chosenMean[i]);
            dr[i] = -dLogOdds / -double.ExpM1(rejectedMean[i]);
        }
        var metrics = new Dictionary<string, double>(Rewards(chosenMean.Select(x => beta * x).ToArray(), rejectedMean.Select(x => beta * x).ToArray(),
            chosenMean, rejectedMean))
        {
            ["log_odds_ratio"] = valid.Count == 0 ? double.NaN : ratioSum / valid.Count,
            ["log_odds_chosen"] = logOdds.Average(),
        };
        return new(loss, dc, dr, metrics);
    }

    /// <summary>
    /// Reward-model loss (reward.py compute_loss) on the scores of chosen and rejected [pairs]: ranking -log σ(c - r) or
    /// focal (1 - p)^2 · that with p = 2·relu(σ(c - r) - 1/2), summed and divided by the pairs; plus penaltyWeight × the
    /// log barrier -log(5 - s) - log(s + 5) (s clamped to ±(5 - 1e-3)) or s², over all 2·pairs scores, divided by the pairs.
    /// </summary>
    public static PreferenceLossResult Reward(RewardLossType type, RewardPenalty penalty, double penaltyWeight, double[] chosen, double[] rejected)
    {
        int n = chosen.Length;
        if (n == 0 || rejected.Length != n) throw new ArgumentException($"a reward model needs as many chosen as rejected scores (> 0), got {n} and {rejected.Length}");
        var dc = new double[n];
        var dr = new double[n];
        double loss = 0;
        for (int i = 0; i < n; i++)
        {
            double d = chosen[i] - rejected[i], rank = -LogSigmoid(d), dRank = -Sigmoid(-d);
            double l = rank, dD = dRank;
            if (type == RewardLossType.Focal)
            {
                double s = Sigmoid(d), p = 2 * Math.Max(s - 0.5, 0), w = (1 - p) * (1 - p);
                double dP = s > 0.5 ? 2 * s * (1 - s) : 0;
                l = w * rank;
                dD = w * dRank - 2 * (1 - p) * dP * rank;
            }
            loss += l / n;
            dc[i] = dD / n;
            dr[i] = -dD / n;
        }
        if (penalty != RewardPenalty.None)
        {
            const double Lower = -5, Upper = 5, Eps = 1e-3;
            void Penalize(double s, ref double grad)
            {
                if (penalty == RewardPenalty.L2)
                {
                    loss += penaltyWeight * s * s / n;
                    grad += penaltyWeight * 2 * s / n;
                    return;
                }
                double x = Math.Clamp(s, Lower + Eps, Upper - Eps);
                loss += penaltyWeight * (-Math.Log(Upper - x) - Math.Log(x - Lower)) / n;
                if (s >= Lower + Eps && s <= Upper - Eps) grad += penaltyWeight * (1 / (Upper - x) - 1 / (x - Lower)) / n;
            }
            for (int i = 0; i < n; i++)
            {
                Penalize(chosen[i], ref dc[i]);
                Penalize(rejected[i], ref dr[i]);
            }
        }
        var metrics = new Dictionary<string, double>
        {
            ["rewards/chosen"] = chosen.Average(), ["rewards/rejected"] = rejected.Average(),
            ["rewards/accuracies"] = Enumerable.Range(0, n).Count(i => chosen[i] > rejected[i]) / (double)n,
            ["rewards/margins"] = Enumerable.Range(0, n).Average(i => chosen[i] - rejected[i]),
        };
        return new(loss, dc, dr, metrics);
    }

    // TRL's logged values: mean rewards, the share of pairs whose chosen reward is higher, the mean margin, mean log-probs.
    static Dictionary<string, double> Rewards(double[] chosenRewards, double[] rejectedRewards, double[] policyChosen, double[] policyRejected)
    {
        int n = chosenRewards.Length;
        return new()
        {
            ["rewards/chosen"] = chosenRewards.Average(), ["rewards/rejected"] = rejectedRewards.Average(),
            ["rewards/accuracies"] = Enumerable.Range(0, n).Count(i => chosenRewards[i] > rejectedRewards[i]) / (double)n,
            ["rewards/margins"] = Enumerable.Range(0, n).Average(i => chosenRewards[i] - rejectedRewards[i]),
            ["logps/chosen"] = policyChosen.Average(), ["logps/rejected"] = policyRejected.Average(),
        };
    }
}
