using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;

namespace IlgpuTune.Data.Tests;

public class PackerTests
{
    // Sample i has ids 1000*i + j, so every token says where it came from; labels: prompt half -100, the rest = ids.
    static List<EncodedSample> Samples(int[] lengths) => lengths.Select((n, i) =>
    {
        var ids = Enumerable.Range(0, n).Select(j => 1000 * i + j).ToArray();
        var labels = ids.Select((id, j) => j < n / 2 ? EncodedSample.IgnoreIndex : id).ToArray();
        return new EncodedSample(ids, labels, false);
    }).ToList();

    static Gen<(int[] Lengths, int MaxLength, ulong Seed)> Cases =>
        from maxLength in Gen.Choose(2, 64)
        from count in Gen.Choose(0, 60)
        from lengths in Gen.ArrayOf(Gen.Choose(2, maxLength), count)
        from seed in Gen.Choose(0, int.MaxValue)
        select (lengths, maxLength, (ulong)seed);

    [Property(MaxTest = 300)]
    public Property EverySampleLandsWholeInExactlyOneRow() => Prop.ForAll(Cases.ToArbitrary(), c =>
    {
        var samples = Samples(c.Lengths);
        var (rows, stats) = Packer.Pack(samples, c.MaxLength, shuffleBeforePack: true, c.Seed);
        var seen = new List<int>();
        foreach (var r in rows)
        {
            Assert.InRange(r.InputIds.Length, 1, c.MaxLength);
            Assert.Equal(0, r.CumulativeLengths[0]);
            Assert.Equal(r.InputIds.Length, r.CumulativeLengths[^1]);
            Assert.Equal(r.SampleIndices.Length + 1, r.CumulativeLengths.Length);
            for (int k = 0; k < r.SampleIndices.Length; k++)
            {
                var s = samples[r.SampleIndices[k]];
                int a = r.CumulativeLengths[k], b = r.CumulativeLengths[k + 1];
                Assert.Equal(s.InputIds, r.InputIds[a..b]);
                Assert.Equal(EncodedSample.IgnoreIndex, r.Labels[a]);
                Assert.Equal(s.Labels[1..], r.Labels[(a + 1)..b]);
                Assert.Equal(Enumerable.Range(0, b - a), r.PositionIds[a..b]);
                seen.Add(r.SampleIndices[k]);
            }
        }
        var withLoss = Enumerable.Range(0, samples.Count).Where(i => samples[i].HasLoss);
        Assert.Equal(withLoss.Order(), seen.Order());
        Assert.Equal(samples.Where(s => s.HasLoss).Sum(s => (long)s.InputIds.Length), stats.Tokens);
        Assert.Equal(rows.Count, stats.Rows);
        // First fit: no two rows could be merged, so at most one row is half empty.
        var loads = rows.Select(r => r.InputIds.Length).Order().ToArray();
        if (loads.Length >= 2) Assert.True(loads[0] + loads[1] > c.MaxLength, $"rows of {loads[0]} and {loads[1]} fit in one");
    });

    [Property(MaxTest = 100)]
    public Property SameSeedSameRows() => Prop.ForAll(Cases.ToArbitrary(), c =>
    {
        var a = Packer.Pack(Samples(c.Lengths), c.MaxLength, true, c.Seed).Rows;
        var b = Packer.Pack(Samples(c.Lengths), c.MaxLength, true, c.Seed).Rows;
        Assert.Equal(a.Select(r => r.InputIds), b.Select(r => r.InputIds));
    });

    [Fact]
    public void PacksTightlyAndReportsFill()
    {
        var (rows, stats) = Packer.Pack(Samples([6, 4, 5, 5, 3, 7, 10]), 10, shuffleBeforePack: false);
        Assert.Equal(4, rows.Count);               // 40 tokens in rows of 10: [10] [7,3] [6,4] [5,5]
        Assert.Equal(1.0, stats.FillRatio);
        Assert.All(rows, r => Assert.Equal(10, r.InputIds.Length));
    }

    [Fact]
    public void SamplesWithoutLossAreDroppedAndTruncationsCounted()
    {
        var samples = new List<EncodedSample>
        {
            new([1, 2, 3], [-100, -100, -100], false),
            new([1, 2, 3, 4], [-100, 2, 3, 4], true),
        };
        var (rows, stats) = Packer.Pack(samples, 4);
        Assert.Single(rows);
        Assert.Equal(1, stats.DroppedNoLoss);
        Assert.Equal(1, stats.Truncated);
        Assert.Equal(1, stats.Samples);
    }

    // With per-sample positions and isolated attention, each sample's shifted loss terms in the packed row are exactly its
    // unpacked terms: (input prefix, target) pairs of the row, split at the cumulative lengths, equal the unpacked ones.
    [Property(MaxTest = 100)]
    public Property ShiftedLossTermsEqualUnpacked() => Prop.ForAll(Cases.ToArbitrary(), c =>
    {
        var samples = Samples(c.Lengths);
        var unpacked = samples.SelectMany((s, i) => Enumerable.Range(0, s.InputIds.Length - 1)
                .Where(t => s.Labels[t + 1] >= 0).Select(t => (i, s.InputIds[..(t + 1)].Sum(), s.Labels[t + 1])))
            .Where(x => samples[x.i].HasLoss).Order().ToList();
        var packed = new List<(int, int, int)>();
        foreach (var r in Packer.Pack(samples, c.MaxLength, true, c.Seed).Rows)
            for (int t = 0; t + 1 < r.InputIds.Length; t++)
            {
                if (r.Labels[t + 1] < 0) continue;
                int k = Array.FindLastIndex(r.CumulativeLengths, x => x <= t);
                Assert.True(t + 1 < r.CumulativeLengths[k + 1], "a target crosses a sample boundary");
                packed.Add((r.SampleIndices[k], r.InputIds[r.CumulativeLengths[k]..(t + 1)].Sum(), r.Labels[t + 1]));
            }
        Assert.Equal(unpacked, packed.Order().ToList());
    });
}
