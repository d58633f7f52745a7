using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

public class ModelTests
{
    private static TensorToWrite[] Tensors() =>
    [
        SafetensorsWriter.F32("model.embed_tokens.weight", [1f, 2f, 3f, 4f], 2, 2),
        new TensorToWrite("model.norm.weight", DType.BF16, [2], Bytes.Of(HalfBits.FloatToBf16(0.5f), HalfBits.FloatToBf16(-1f))),
        SafetensorsWriter.I32("position_ids", [0, 1, 2], 3),
        SafetensorsWriter.F32("lm_head.weight", [5f, 6f, 7f, 8f], 2, 2),
    ];

    private static void AssertContents(SafetensorsModel m)
    {
        Assert.Equal(4, m.Names.Count);
        Assert.Equal(Tensors().Select(t => t.Name).Order(StringComparer.Ordinal), m.Names.Order(StringComparer.Ordinal));
        Assert.Equal([1f, 2f, 3f, 4f], m.ReadFloat32("model.embed_tokens.weight"));
        Assert.Equal([0.5f, -1f], m.ReadFloat32("model.norm.weight"));
        Assert.Equal([0, 1, 2], m.ReadInt32("position_ids"));
        Assert.Equal([5f, 6f, 7f, 8f], m.ReadFloat32("lm_head.weight"));
        Assert.Equal("BF16", m.Get("model.norm.weight").DType);
        Assert.True(m.Contains("lm_head.weight"));
        Assert.False(m.Contains("nope"));
        var e = Assert.Throws<KeyNotFoundException>(() => m.Get("nope"));
        Assert.Contains("'nope'", e.Message);
        Assert.Contains(m.Path, e.Message);
    }

    [Fact]
    public void Open_ShardedDirectory_IndexFile_AndSingleFile()
    {
        using var dir = new TempDir();
        SafetensorsWriter.WriteSharded(dir.Path, "model", Tensors(), 16);
        using (var m = SafetensorsModel.Open(dir.Path))
        {
            Assert.Equal(dir.File("model.safetensors.index.json"), m.Path);
            Assert.Equal(3, m.Files.Count);
            AssertContents(m);
            Assert.Equal(dir.File("model-00001-of-00003.safetensors"), m.FileOf("model.embed_tokens.weight").Path);
            Assert.Same(m.FileOf("model.norm.weight"), m.FileOf("position_ids"));
        }
        using (var m = SafetensorsModel.Open(dir.File("model.safetensors.index.json"))) AssertContents(m);

        using var single = new TempDir();
        SafetensorsWriter.Write(single.File("model.safetensors"), Tensors());
        using (var m = SafetensorsModel.Open(single.Path))
        {
            Assert.Single(m.Files);
            AssertContents(m);
        }
        using (var m = SafetensorsModel.Open(single.File("model.safetensors"))) AssertContents(m);
    }

    [Fact]
    public void Open_IndexNameSelectsTheSingleFileNameToo()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("adapter_model.safetensors"), Tensors());
        using (var m = SafetensorsModel.Open(dir.Path, "adapter_model.safetensors.index.json")) AssertContents(m);
        Assert.Throws<FileNotFoundException>(() => SafetensorsModel.Open(dir.Path));
        Assert.Throws<FileNotFoundException>(() => SafetensorsModel.Open(dir.File("missing")));
    }

    [Fact]
    public void Open_PrefersSingleFileOverIndex_LikeTransformers()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("model.safetensors"), Tensors());
        File.WriteAllText(dir.File("model.safetensors.index.json"), """{"weight_map":{"x":"gone.safetensors"}}""");
        using var m = SafetensorsModel.Open(dir.Path);
        Assert.Equal(dir.File("model.safetensors"), m.Path);
    }

    public static TheoryData<string, string, string[]> BadIndexes => new()
    {
        { "missing shard", """{"weight_map":{"w":"missing.safetensors"}}""", ["'w'", "missing.safetensors", "does not exist"] },
        { "name absent", """{"weight_map":{"w":"s.safetensors","x":"s.safetensors"}}""", ["'x'", "s.safetensors", "has no tensor"] },
        { "outside", """{"weight_map":{"w":"../s.safetensors"}}""", ["'w'", "outside the model directory"] },
        { "no weight_map", """{"metadata":{"total_size":4}}""", ["missing 'weight_map'"] },
        { "duplicate name", """{"weight_map":{"w":"s.safetensors","w":"s.safetensors"}}""", ["duplicate key 'w'"] },
        { "not a string", """{"weight_map":{"w":1}}""", ["'w'", "must be a file name"] },
        { "not an object", """[]""", ["expected a JSON object"] },
        { "bad json", """{"weight_map":{""", ["not valid JSON"] },
    };

    [Theory]
    [MemberData(nameof(BadIndexes))]
    public void Open_RejectsBadIndex(string name, string index, string[] fragments)
    {
        using var dir = new TempDir();
        var sub = Directory.CreateDirectory(dir.File(name.Replace(' ', '_'))).FullName;
        SafetensorsWriter.Write(Path.Combine(sub, "s.safetensors"), [SafetensorsWriter.F32("w", [1f], 1)]);
        SafetensorsWriter.Write(dir.File("s.safetensors"), [SafetensorsWriter.F32("w", [1f], 1)]);
        string indexPath = Path.Combine(sub, "model.safetensors.index.json");
        File.WriteAllText(indexPath, index);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsModel.Open(sub));
        Assert.Contains(indexPath, e.Message);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
    }

    [Fact]
    public void Open_CorruptShard_NamesTheShard()
    {
        using var dir = new TempDir();
        SafetensorsWriter.WriteSharded(dir.Path, "model", Tensors(), 16);
        File.WriteAllBytes(dir.File("model-00002-of-00003.safetensors"), new byte[5]);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsModel.Open(dir.Path));
        Assert.Contains(dir.File("model-00002-of-00003.safetensors"), e.Message);
    }
}
