using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;

namespace IlgpuTune.Data.Tests;

public class PackedCacheTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ilgpu-tune-cache-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void RoundTripsThroughTheMappedFile()
    {
        var rand = new Random(7);
        var samples = Enumerable.Range(0, 50).Select(i =>
        {
            int n = rand.Next(2, 33);
            var ids = Enumerable.Range(0, n).Select(_ => rand.Next(0, 150000)).ToArray();
            return new EncodedSample(ids, ids.Select((x, j) => j < n / 3 ? -100 : x).ToArray(), i % 9 == 0);
        }).ToList();
        var (rows, stats) = Packer.Pack(samples, 40, true, 3);
        using (var written = PackedCache.Write(_dir, "k", rows, stats)) Assert.Equal(stats, written.Stats);
        using var c = PackedCache.TryOpen(_dir, "k")!;
        Assert.Equal(stats, c.Stats);
        for (int i = 0; i < rows.Count; i++)
        {
            var r = c.GetRow(i);
            Assert.Equal(rows[i].InputIds, r.InputIds);
            Assert.Equal(rows[i].Labels, r.Labels);
            Assert.Equal(rows[i].PositionIds, r.PositionIds);
            Assert.Equal(rows[i].CumulativeLengths, r.CumulativeLengths);
            Assert.Equal(rows[i].SampleIndices, r.SampleIndices);
        }
        Assert.Equal(["k.packed"], Directory.GetFiles(_dir).Select(Path.GetFileName));
        Assert.True(new FileInfo(PackedCache.PathFor(_dir, "k")).Length <= 5 * stats.Tokens + 40 + 16L * (rows.Count + 1) + 8L * (rows.Count + stats.Samples));
        Assert.Null(PackedCache.TryOpen(_dir, "other"));
    }

    [Fact]
    public void StoresIdsNarrowAndLabelsAsBits()
    {
        var rand = new Random(11);
        var samples = Enumerable.Range(0, 200).Select(i =>
        {
            int n = rand.Next(20, 200);
            var ids = Enumerable.Range(0, n).Select(_ => rand.Next(0, 151_000)).ToArray();
            return new EncodedSample(ids, ids.Select((x, j) => j < n / 2 ? -100 : x).ToArray(), false);
        }).ToList();
        var (rows, stats) = Packer.Pack(samples, 512, true, 1);
        using (PackedCache.Write(_dir, "narrow", rows, stats)) { }
        double bytesPerToken = (double)new FileInfo(PackedCache.PathFor(_dir, "narrow")).Length / stats.Tokens;
        Assert.InRange(bytesPerToken, 3.0, 3.5);   // 3-byte ids + a bit of label + per-row/per-sample offsets
        // Ids below 65,536 take two bytes; labels that are not the token's id are stored whole.
        var small = samples.Select(s => new EncodedSample(s.InputIds.Select(x => x % 60_000).ToArray(),
            s.InputIds.Select((x, j) => j % 3 == 0 ? -100 : x % 60_000 + 1).ToArray(), false)).ToList();
        var (rows2, stats2) = Packer.Pack(small, 512, false, 0);
        using var c = PackedCache.Write(_dir, "wide-labels", rows2, stats2);
        for (int i = 0; i < rows2.Count; i++)
        {
            var r = c.GetRow(i);
            Assert.Equal(rows2[i].InputIds, r.InputIds);
            Assert.Equal(rows2[i].Labels, r.Labels);
            Assert.Equal(rows2[i].PositionIds, r.PositionIds);
        }
    }

    [Fact]
    public void AnUnreadableCacheIsAMiss()
    {
        File.WriteAllBytes(PackedCache.PathFor(_dir, "old"), [0x49, 0x54, 0x50, 0x4B, 1, 0, 0, 0]);
        Assert.Null(PackedCache.TryOpen(_dir, "old"));
        File.WriteAllBytes(PackedCache.PathFor(_dir, "short"), new byte[100]);
        Assert.Null(PackedCache.TryOpen(_dir, "short"));
    }

    [Fact]
    public void KeyFollowsContentsAndOptions()
    {
        string data = Path.Combine(_dir, "d.jsonl"), tok = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(data, "{\"text\": \"a\"}");
        File.WriteAllText(tok, "{}");
        string k = PackedCache.Key([data], [tok], "qwen_chat", "text", 2048, true, 0);
        Assert.Equal(k, PackedCache.Key([data], [tok], "qwen_chat", "text", 2048, true, 0));
        Assert.NotEqual(k, PackedCache.Key([data], [tok], "qwen_chat", "text", 4096, true, 0));
        Assert.NotEqual(k, PackedCache.Key([data], [tok], "llama3_chat", "text", 2048, true, 0));
        Assert.NotEqual(k, PackedCache.Key([data], [tok], "qwen_chat", "text", 2048, true, 1));
        File.WriteAllText(data, "{\"text\": \"b\"}");
        Assert.NotEqual(k, PackedCache.Key([data], [tok], "qwen_chat", "text", 2048, true, 0));
    }
}
