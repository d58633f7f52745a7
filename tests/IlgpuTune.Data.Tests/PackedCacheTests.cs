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
        Assert.Null(PackedCache.TryOpen(_dir, "other"));
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
