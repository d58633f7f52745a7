using System.Text.Json.Nodes;
using IlgpuTune.TestKit;
using IlgpuTune.Training.Preference;

namespace IlgpuTune.Training.Tests;

/// <summary>PreferenceLoss against torch autograd (tools/golden/make_pref_golden.py -> tests/fixtures/pref/golden.json).</summary>
public class PreferenceGoldenTests
{
    [Fact]
    public void LossesAndGradients_MatchTorch()
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(Repo.Root, "tests", "fixtures", "pref", "golden.json")))!;
        var cases = root["cases"]!.AsArray();
        Assert.Equal(22, cases.Count);
        foreach (var c in cases)
        {
            double[] A(string k) => c![k]!.AsArray().Select(x => (double)x!).ToArray();
            var p = c!["params"]!;
            var r = (string)c["kind"]! switch
            {
                "dpo" => PreferenceLoss.Dpo(PreferenceLoss.ParseDpo((string)p["loss_type"]!), (double)p["beta"]!, (double)p["label_smoothing"]!,
                    A("chosen"), A("rejected"), A("ref_chosen"), A("ref_rejected")),
                "orpo" => PreferenceLoss.OddsRatio((double)p["beta"]!, A("chosen"), A("rejected")),
                _ => PreferenceLoss.Reward((string)p["loss_type"]! == "focal" ? RewardLossType.Focal : RewardLossType.Ranking,
                    (string)p["penalty_type"]! switch { "log_barrier" => RewardPenalty.LogBarrier, "L2" => RewardPenalty.L2, _ => RewardPenalty.None },
                    (double)p["penalty_weight"]!, A("chosen"), A("rejected")),
            };
            string what = $"{c["kind"]} {p.ToJsonString()}";
            Assert.True(Math.Abs(r.Loss - (double)c["loss"]!) < 1e-12, $"{what}: loss {r.Loss} vs torch {c["loss"]}");
            foreach (var (got, want) in new[] { (r.DChosen, A("d_chosen")), (r.DRejected, A("d_rejected")) })
                for (int i = 0; i < want.Length; i++)
                    Assert.True(Math.Abs(got[i] - want[i]) < 1e-12, $"{what}: gradient {i} {got[i]} vs torch {want[i]}");
        }
    }
}
