using IlgpuTune.Data;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Preference;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.TestKit;
using IlgpuTune.Training;

namespace IlgpuTune.Training.Tests;

/// <summary>XTuner's preference JSONL: reading, rendering (prompt unlabelled), truncation and pair packing.</summary>
public class PreferenceDataTests
{
    const string Record = """{"prompt": [{"role": "user", "content": "a shade of red"}], "chosen": [{"role": "assistant", "content": "#ff0000"}], "rejected": [{"role": "assistant", "content": "#0000ff"}]}""";

    static ISampleEncoder Encoder(int maxLength)
    {
        string dir = Builtins.ResolveAsset("@tiny");
        var tok = Tokenizers.FromDirectory(dir);
        return DataPipeline.CreateEncoder(new DataOptions { DataFiles = [], Format = "openai", TokenizerDir = dir, Template = "qwen_chat", MaxLength = maxLength }, tok);
    }

    [Fact]
    public void Pair_RendersPromptUnlabelledAndTheResponseLabelled()
    {
        using var dir = new TempDir();
        var pairs = PreferenceData.Read([dir.Write("p.jsonl", Record + "\n" + Record.Replace("red", "green") + "\n")]);
        Assert.Equal(2, pairs.Count);
        var tok = Tokenizers.FromDirectory(Builtins.ResolveAsset("@tiny"));
        var e = PreferenceData.Encode(pairs[0], Encoder(64));
        foreach (var (side, hex) in new[] { (e.Chosen, "#ff0000"), (e.Rejected, "#0000ff") })
        {
            var labelled = side.Labels.Where(l => l >= 0).ToArray();
            Assert.StartsWith(hex, tok.Decode(labelled));
            int firstLabel = Array.FindIndex(side.Labels, l => l >= 0);
            Assert.Contains("a shade of red", tok.Decode(side.InputIds[..firstLabel]));
        }
        Assert.Equal(e.Chosen.InputIds.Length - e.Chosen.Labels.Count(l => l >= 0), e.Rejected.InputIds.Length - e.Rejected.Labels.Count(l => l >= 0));
    }

    [Fact]
    public void Pack_LaysPairsChosenThenRejectedWithinMaxLength()
    {
        using var dir = new TempDir();
        var lines = Enumerable.Range(0, 7).Select(i => Record.Replace("red", new string('x', i + 1)));
        var pairs = PreferenceData.Read([dir.Write("p.jsonl", string.Join("\n", lines))]);
        var enc = pairs.Select(p => PreferenceData.Encode(p, Encoder(40))).ToList();
        var (rows, stats) = PreferenceData.Pack(enc, 80, shuffle: true, seed: 3);
        Assert.Equal(7, stats.Samples);
        Assert.Equal(0, stats.DroppedNoLoss);
        var seen = new List<int>();
        foreach (var row in rows)
        {
            Assert.True(row.InputIds.Length <= 80);
            Assert.Equal(row.InputIds.Length, row.CumulativeLengths[^1]);
            for (int s = 0; s < row.SampleIndices.Length; s += 2)
            {
                Assert.Equal(row.SampleIndices[s] + 1, row.SampleIndices[s + 1]); // chosen, then its rejected
                Assert.Equal(0, row.SampleIndices[s] % 2);
                Assert.Equal(-100, row.Labels[row.CumulativeLengths[s]]);
                Assert.Equal(0, row.PositionIds[row.CumulativeLengths[s + 1]]);
                var pair = enc[row.SampleIndices[s] / 2];
                Assert.Equal(pair.Chosen.InputIds, row.InputIds[row.CumulativeLengths[s]..row.CumulativeLengths[s + 1]]);
                Assert.Equal(pair.Rejected.InputIds, row.InputIds[row.CumulativeLengths[s + 1]..row.CumulativeLengths[s + 2]]);
            }
            seen.AddRange(row.SampleIndices);
        }
        Assert.Equal(Enumerable.Range(0, 14), seen.Order());
    }

    [Fact]
    public void Truncation_DropsPairsWhoseResponseIsCutAway()
    {
        using var dir = new TempDir();
        var pairs = PreferenceData.Read([dir.Write("p.jsonl", Record)]);
        var e = PreferenceData.Encode(pairs[0], Encoder(8)); // 8 tokens: the prompt alone is longer
        Assert.True(e.Chosen.Truncated);
        var (rows, stats) = PreferenceData.Pack([e], 16, false, 0);
        Assert.Empty(rows);
        Assert.Equal(1, stats.DroppedNoLoss);
    }

    [Fact]
    public void BadRecords_AreReportedTogetherWithFileLineAndField()
    {
        using var dir = new TempDir();
        string file = dir.Write("p.jsonl", string.Join("\n",
            Record,
            """{"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant", "content": "y"}]}""",
            """{"prompt": "x", "chosen": [], "rejected": [{"role": "user", "content": "z"}]}"""));
        var e = Assert.Throws<DatasetException>(() => PreferenceData.Read([file]));
        Assert.Contains("p.jsonl:2: rejected: missing", e.Message);
        Assert.Contains("p.jsonl:3: prompt: expected an array of messages, got String", e.Message);
    }

    [Fact]
    public void RewardEncoding_AppendsTheRewardTokenAndSupervisesOnlyIt()
    {
        using var dir = new TempDir();
        var pairs = PreferenceData.Read([dir.Write("p.jsonl", Record)]);
        var e = PreferenceData.Encode(pairs[0], Encoder(64), rewardTokenId: 556);
        Assert.Equal(556, e.Chosen.InputIds[^1]);
        Assert.Equal([0], e.Chosen.Labels.Where(l => l >= 0));
        Assert.Equal([1], e.Rejected.Labels.Where(l => l >= 0));
    }
}
