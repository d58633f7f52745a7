using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Training.Preference;

namespace IlgpuTune.Training.Tests;

public class PreferenceLossTests
{
    // One pair: policy chosen -1, rejected -2; reference -1.5 both. logits = (−1 − −2) − 0 = 1; β = 0.1 -> z = 0.1;
    // chosen log-ratio a = 0.5, rejected b = -0.5.
    static PreferenceLossResult Dpo(DpoLossType type, double eps = 0) => PreferenceLoss.Dpo(type, 0.1, eps, [-1], [-2], [-1.5], [-1.5]);

    [Theory]
    [InlineData(DpoLossType.Sigmoid, 0.0, 0.6443966600735709)]    // -log σ(0.1) = log(1 + e^-0.1)
    [InlineData(DpoLossType.Sigmoid, 0.1, 0.6543966600735709)]    // -0.9 log σ(0.1) - 0.1 log σ(-0.1)
    [InlineData(DpoLossType.Robust, 0.1, 0.6318966600735709)]     // (-0.9 log σ(0.1) + 0.1 log σ(-0.1)) / 0.8
    [InlineData(DpoLossType.Hinge, 0.0, 0.9)]                     // relu(1 - 0.1)
    [InlineData(DpoLossType.Ipo, 0.0, 16.0)]                      // (1 - 1/(2·0.1))²
    [InlineData(DpoLossType.SppoHard, 0.0, 40.5)]                 // (0.5 - 5)² + (-0.5 + 5)²
    [InlineData(DpoLossType.NcaPair, 0.0, 1.3619192960265725)]    // -log σ(0.05) - ½ log σ(-0.05) - ½ log σ(0.05)
    [InlineData(DpoLossType.KtoPair, 0.0, 0.4812617080184248)]    // ((1 - σ(0.1·(0.5 - 0))) + (1 - σ(0.1·(0.5 + 0.5)))) / 2
    public void Dpo_HandValues(DpoLossType type, double eps, double want)
    {
        var r = Dpo(type, eps);
        Assert.Equal(want, r.Loss, 12);
        Assert.Equal(0.05, r.Metrics["rewards/chosen"], 12);
        Assert.Equal(-0.05, r.Metrics["rewards/rejected"], 12);
        Assert.Equal(0.1, r.Metrics["rewards/margins"], 12);
        Assert.Equal(1.0, r.Metrics["rewards/accuracies"]);
        Assert.Equal(-1.0, r.Metrics["logps/chosen"]);
        Assert.Equal(-2.0, r.Metrics["logps/rejected"]);
    }

    [Fact]
    public void OddsRatio_HandValue()
    {
        // c = -0.5, r = -1: log_odds = 0.5 - (log(1 - e^-0.5) - log(1 - e^-1)) = 0.97408; loss = -0.1 log σ(log_odds).
        var r = PreferenceLoss.OddsRatio(0.1, [-0.5], [-1.0]);
        Assert.Equal(0.03202997852375365, r.Loss, 12);
        Assert.Equal(0.9740769841801067, r.Metrics["log_odds_chosen"], 12);
        Assert.Equal(-0.05, r.Metrics["rewards/chosen"], 12);
    }

    [Fact]
    public void OddsRatio_DropsNonFinitePairs()
    {
        // Mean log-probs of 0 (probability 1) on both sides make log_odds = -inf + inf = NaN: XTuner drops that pair's term.
        var r = PreferenceLoss.OddsRatio(0.1, [0.0, -0.5], [0.0, -1.0]);
        Assert.Equal(0.03202997852375365, r.Loss, 12);
        Assert.Equal(0.0, r.DChosen[0]);
        Assert.Equal(0.0, r.DRejected[0]);
        // Only the chosen side at probability 1: log_odds = +inf, a term of 0 that still counts in the mean (as torch).
        Assert.Equal(0.03202997852375365 / 2, PreferenceLoss.OddsRatio(0.1, [0.0, -0.5], [-1.0, -1.0]).Loss, 12);
    }

    [Theory]
    [InlineData(RewardLossType.Ranking, RewardPenalty.None, 0.1269280110429725)]                  // -log σ(1 - -1)
    [InlineData(RewardLossType.Focal, RewardPenalty.None, 0.007214251340961517)]                   // (1 - 2(σ(2) - ½))² · that
    [InlineData(RewardLossType.Ranking, RewardPenalty.LogBarrier, 0.1269280110429725 - 0.06356107660695891)] // + 0.01 · 2(-log 4 - log 6)
    [InlineData(RewardLossType.Ranking, RewardPenalty.L2, 0.1269280110429725 + 0.02)]               // + 0.01 · (1 + 1)
    public void Reward_HandValues(RewardLossType type, RewardPenalty penalty, double want)
    {
        var r = PreferenceLoss.Reward(type, penalty, 0.01, [1.0], [-1.0]);
        Assert.Equal(want, r.Loss, 12);
        Assert.Equal(1.0, r.Metrics["rewards/accuracies"]);
        Assert.Equal(2.0, r.Metrics["rewards/margins"], 12);
    }

    [Fact]
    public void Dpo_RejectsUnknownLossTypeNamingTheChoices()
    {
        var e = Assert.Throws<ArgumentException>(() => PreferenceLoss.ParseDpo("sigmod"));
        Assert.Contains("sigmoid, robust, hinge, ipo, kto_pair, sppo_hard, nca_pair", e.Message);
    }

    // Every loss's gradient against central differences in fp64, on random batches of 1-4 pairs.
    [Property(MaxTest = 40)]
    public Property Gradients_MatchFiniteDifferences()
    {
        var cases = from kind in Gen.Choose(0, 11) from pairs in Gen.Choose(1, 4) from seed in Gen.Choose(0, 100000) select (kind, pairs, seed);
        return Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var (kind, n, seed) = c;
            var rng = new Random(seed);
            double[] Draw(double lo, double hi) => Enumerable.Range(0, n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray();
            var refC = Draw(-4, -0.5);
            var refR = Draw(-4, -0.5);
            Func<double[], double[], PreferenceLossResult> f = kind switch
            {
                < 7 => (pc, pr) => PreferenceLoss.Dpo((DpoLossType)kind, 0.5, 0.1, pc, pr, refC, refR),
                7 => (pc, pr) => PreferenceLoss.OddsRatio(0.3, pc, pr),
                8 => (pc, pr) => PreferenceLoss.Reward(RewardLossType.Ranking, RewardPenalty.None, 0.01, pc, pr),
                9 => (pc, pr) => PreferenceLoss.Reward(RewardLossType.Focal, RewardPenalty.None, 0.01, pc, pr),
                10 => (pc, pr) => PreferenceLoss.Reward(RewardLossType.Ranking, RewardPenalty.LogBarrier, 0.5, pc, pr),
                _ => (pc, pr) => PreferenceLoss.Reward(RewardLossType.Focal, RewardPenalty.L2, 0.5, pc, pr),
            };
            var pc0 = Draw(-4, -0.5);
            var pr0 = Draw(-4, -0.5);
            var at = f(pc0, pr0);
            const double h = 1e-6;
            for (int side = 0; side < 2; side++)
                for (int i = 0; i < n; i++)
                {
                    var (p, m) = ((double[])(side == 0 ? pc0 : pr0).Clone(), (double[])(side == 0 ? pc0 : pr0).Clone());
                    p[i] += h;
                    m[i] -= h;
                    double fd = side == 0 ? (f(p, pr0).Loss - f(m, pr0).Loss) / (2 * h) : (f(pc0, p).Loss - f(pc0, m).Loss) / (2 * h);
                    double analytic = side == 0 ? at.DChosen[i] : at.DRejected[i];
                    if (Math.Abs(fd - analytic) > 1e-6 * (1 + Math.Abs(fd))) return false;
                }
            return true;
        });
    }
}
