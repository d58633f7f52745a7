using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;

namespace IlgpuTune.Data.Tests;

public class DataPipelineTests
{
    static DataOptions Options(string cacheTokDir, bool pack) => new()
    {
        DataFiles = [Fixtures.Path("xtuner-conversations.json")],
        Format = "conversation",
        TokenizerDir = cacheTokDir,
        Template = "qwen_chat",
        MaxLength = 64,
        Pack = pack,
        Seed = 3,
    };

    [Fact]
    public void ParallelEncodeEqualsSequentialInOrder()
    {
        var o = Options(RealTokenizers.Dir("qwen3"), pack: true);
        var (convs, _) = DataPipeline.Read(o);
        var enc = DataPipeline.CreateEncoder(o, RealTokenizers.Get("qwen3"));
        var parallel = DataPipeline.EncodeAll(convs, enc);
        var sequential = convs.Select(enc.Encode).ToArray();
        Assert.Equal(sequential.Length, parallel.Length);
        for (int i = 0; i < parallel.Length; i++)
        {
            Assert.Equal(sequential[i].InputIds, parallel[i].InputIds);
            Assert.Equal(sequential[i].Labels, parallel[i].Labels);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PrepareWritesOnceThenOpensTheCache(bool pack)
    {
        string cache = Directory.CreateTempSubdirectory("pipeline-").FullName;
        try
        {
            var o = Options(RealTokenizers.Dir("qwen3"), pack);
            var tok = RealTokenizers.Get("qwen3");
            PackStats first;
            PackedRow row0;
            using (var c = DataPipeline.Prepare(o, tok, cache))
            {
                first = c.Stats;
                row0 = c.GetRow(0);
            }
            string file = Assert.Single(Directory.GetFiles(cache));
            var written = File.GetLastWriteTimeUtc(file);
            using (var again = DataPipeline.Prepare(o, tok, cache))
            {
                Assert.Equal(first, again.Stats);
                Assert.Equal(row0.InputIds, again.GetRow(0).InputIds);
            }
            Assert.Equal(written, File.GetLastWriteTimeUtc(file));
            Assert.True(pack ? first.Rows < first.Samples : first.Rows == first.Samples);
            using (DataPipeline.Prepare(o with { MaxLength = 128 }, tok, cache)) { }
            Assert.Equal(2, Directory.GetFiles(cache).Length);
        }
        finally
        {
            Directory.Delete(cache, true);
        }
    }

    [Fact]
    public void TheCacheFolderIsUserLevelAndMovable()
    {
        string cache = Directory.CreateTempSubdirectory("pipeline-user-").FullName;
        string? before = Environment.GetEnvironmentVariable(DataPipeline.CacheDirVariable);
        try
        {
            Environment.SetEnvironmentVariable(DataPipeline.CacheDirVariable, Path.Combine(cache, "env"));
            Assert.Equal(Path.Combine(cache, "env"), DataPipeline.DefaultCacheDir());
            Environment.SetEnvironmentVariable(DataPipeline.CacheDirVariable, null);
            Assert.EndsWith(Path.Combine(".cache", "ilgpu-tune", "datasets"), DataPipeline.DefaultCacheDir());
            // dataset_cache_dir (DataOptions.CacheDir) wins over the default; check-dataset's samples land there too.
            var o = Options(RealTokenizers.Dir("qwen3"), true) with { CacheDir = Path.Combine(cache, "cfg") };
            var tok = RealTokenizers.Get("qwen3");
            using (DataPipeline.Prepare(o, tok)) { }
            string file = Assert.Single(Directory.GetFiles(Path.Combine(cache, "cfg")));
            var (conversations, _) = DataPipeline.Read(o);
            Assert.Equal(file, DataPipeline.StoreInCache(o, DataPipeline.EncodeAll(conversations, DataPipeline.CreateEncoder(o, tok))));
            Assert.Single(Directory.GetFiles(Path.Combine(cache, "cfg")));
        }
        finally
        {
            Environment.SetEnvironmentVariable(DataPipeline.CacheDirVariable, before);
            Directory.Delete(cache, true);
        }
    }

    [Fact]
    public void ErrorsOfAllFilesAreReportedTogether()
    {
        string dir = Directory.CreateTempSubdirectory("pipeline-bad-").FullName;
        try
        {
            string a = Path.Combine(dir, "a.jsonl"), b = Path.Combine(dir, "b.jsonl");
            File.WriteAllText(a, "{\"conversation\": [{\"input\": \"x\"}]}\n");
            File.WriteAllText(b, "{\"conversation\": []}\nnot json\n");
            var e = Assert.Throws<DatasetException>(() => DataPipeline.Read(Options(dir, true) with { DataFiles = [a, b] }));
            Assert.Equal(["a.jsonl:1", "b.jsonl:1", "b.jsonl:2"], e.Errors.Select(x => x.Location).Order().ToArray());
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
