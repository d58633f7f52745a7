using System.Text.Json;
using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

public class ShardingTests
{
    private static TensorToWrite U8(string name, int bytes) =>
        new(name, DType.U8, [bytes], Enumerable.Range(0, bytes).Select(i => (byte)(i + name.Length)).ToArray());

    private static string[][] ShardNames(TempDir dir, IReadOnlyList<string> written) => written
        .Where(n => n.EndsWith(".safetensors", StringComparison.Ordinal))
        .Select(n =>
        {
            using var f = SafetensorsFile.Open(dir.File(n));
            return f.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal).ToArray();
        }).ToArray();

    [Fact]
    public void Split_FollowsHubGreedyOrder()
    {
        // huggingface_hub's docstring example: [6, 6, 2, 6, 2, 2] with limit 10 -> [6], [6+2], [6+2+2].
        using var dir = new TempDir();
        var tensors = new[] { U8("a", 6), U8("b", 6), U8("c", 2), U8("d", 6), U8("e", 2), U8("f", 2) };
        var written = SafetensorsWriter.WriteSharded(dir.Path, "model", tensors, 10);
        Assert.Equal(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors", "model.safetensors.index.json"], written);
        Assert.Equal(written.Order(StringComparer.Ordinal), dir.FileNames());
        Assert.Equal([["a"], ["b", "c"], ["d", "e", "f"]], ShardNames(dir, written));
    }

    [Fact]
    public void Split_OversizedTensorGetsItsOwnShardAtOnce()
    {
        var s = SafetensorsWriter.Split([U8("a", 3), U8("big", 12), U8("b", 4), U8("c", 4), U8("huge", 11), U8("d", 1)], 10);
        // The big tensor's shard is appended when met, before the shard being filled (as in huggingface_hub).
        Assert.Equal([["big"], ["a", "b"], ["huge"], ["c", "d"]], s.Select(x => x.Select(t => t.Name).ToArray()).ToArray());
    }

    [Fact]
    public void Split_ExactlyAtLimitStaysTogether_ZeroSizeJoinsCurrent()
    {
        var s = SafetensorsWriter.Split([U8("a", 5), U8("z", 0), U8("b", 5), U8("c", 1), U8("y", 0)], 10);
        Assert.Equal([["a", "z", "b"], ["c", "y"]], s.Select(x => x.Select(t => t.Name).ToArray()).ToArray());
    }

    [Fact]
    public void IndexJson_MatchesTransformersLayout()
    {
        using var dir = new TempDir();
        var tensors = new[] { U8("model.norm.weight", 6), U8("lm_head.weight", 6), SafetensorsWriter.F32("a.bias", [1f], 1) };
        SafetensorsWriter.WriteSharded(dir.Path, "model", tensors, 10);
        // json.dumps(index, indent=2, sort_keys=True) + "\n"
        string expected = """
            {
              "metadata": {
                "total_size": 16
              },
              "weight_map": {
                "a.bias": "model-00002-of-00002.safetensors",
                "lm_head.weight": "model-00002-of-00002.safetensors",
                "model.norm.weight": "model-00001-of-00002.safetensors"
              }
            }

            """;
        Assert.Equal(expected, File.ReadAllText(dir.File("model.safetensors.index.json")));
        using var doc = JsonDocument.Parse(File.ReadAllBytes(dir.File("model.safetensors.index.json")));
        Assert.Equal(16, doc.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
    }

    [Fact]
    public void OneShard_WritesPlainFileWithoutIndex_AndMetadataInEveryShard()
    {
        using var dir = new TempDir();
        var meta = new Dictionary<string, string> { ["note"] = "x" };
        var written = SafetensorsWriter.WriteSharded(dir.Path, "adapter_model", [U8("a", 4), U8("b", 4)], 1000, meta);
        Assert.Equal(["adapter_model.safetensors"], written);
        Assert.Equal(["adapter_model.safetensors"], dir.FileNames());
        using (var f = SafetensorsFile.Open(dir.File("adapter_model.safetensors")))
            Assert.Equal("x", f.Metadata["note"]);

        written = SafetensorsWriter.WriteSharded(dir.Path, "adapter_model", [U8("a", 4), U8("b", 4)], 4, meta);
        foreach (var n in written.Take(2))
        {
            using var f = SafetensorsFile.Open(dir.File(n));
            Assert.Equal("pt", f.Metadata["format"]);
            Assert.Equal("x", f.Metadata["note"]);
        }
    }

    [Fact]
    public void NoTensors_WritesOneEmptyFile()
    {
        using var dir = new TempDir();
        Assert.Equal(["model.safetensors"], SafetensorsWriter.WriteSharded(dir.Path, "model", [], 10));
        using var f = SafetensorsFile.Open(dir.File("model.safetensors"));
        Assert.Empty(f.Tensors);
    }

    [Fact]
    public void Resave_RemovesStaleShardsOfTheSamePrefixOnly()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), "{}");
        File.WriteAllText(dir.File("model-extra.safetensors"), "keep");
        File.WriteAllText(dir.File("other-00001-of-00002.safetensors"), "keep");
        var three = new[] { U8("a", 6), U8("b", 6), U8("c", 6) };
        SafetensorsWriter.WriteSharded(dir.Path, "model", three, 10);
        Assert.Equal(3, dir.FileNames().Count(n => n.StartsWith("model-0", StringComparison.Ordinal)));

        SafetensorsWriter.WriteSharded(dir.Path, "model", three, 12);
        Assert.Equal(["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model-extra.safetensors",
            "model.safetensors.index.json", "other-00001-of-00002.safetensors"], dir.FileNames());

        SafetensorsWriter.WriteSharded(dir.Path, "model", three, 100);
        Assert.Equal(["config.json", "model-extra.safetensors", "model.safetensors", "other-00001-of-00002.safetensors"],
            dir.FileNames());

        SafetensorsWriter.WriteSharded(dir.Path, "model", three, 6);
        Assert.DoesNotContain("model.safetensors", dir.FileNames());
        using var m = SafetensorsModel.Open(dir.Path);
        Assert.Equal(3, m.Files.Count);
    }

    [Fact]
    public void InvalidInput_WritesNothing()
    {
        using var dir = new TempDir();
        var target = Path.Combine(dir.Path, "out");
        var bad = new[] { U8("a", 6), new TensorToWrite("b", DType.F32, [2], new byte[7]) };
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteSharded(target, "model", bad, 4));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteSharded(target, "model", [U8("a", 1), U8("a", 1)], 4));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.WriteSharded(target, "sub/model", [U8("a", 1)], 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => SafetensorsWriter.WriteSharded(target, "model", [U8("a", 1)], 0));
        Assert.False(Directory.Exists(target));
    }

    [Fact]
    public void Streaming_WritesTheSameBytes_AskingForEachTensorOnceInHeaderOrder()
    {
        var tensors = new[] { U8("e", 6), U8("b", 6), U8("d", 2), SafetensorsWriter.F32("c", [1f, 2f], 2), U8("a", 2) };
        using var eager = new TempDir();
        using var streamed = new TempDir();
        var written = SafetensorsWriter.WriteSharded(eager.Path, "model", tensors, 10);
        var asked = new List<string>();
        var byName = tensors.ToDictionary(t => t.Name);
        var written2 = SafetensorsWriter.WriteShardedStreaming(streamed.Path, "model",
            tensors.Select(t => new TensorSpec(t.Name, t.DType, t.Shape)).ToList(), 10, spec =>
            {
                asked.Add(spec.Name);
                return byName[spec.Name].Data;
            });
        Assert.Equal(written, written2);
        foreach (var f in written) Assert.Equal(File.ReadAllBytes(eager.File(f)), File.ReadAllBytes(streamed.File(f)));
        // shards [e], [b, d], [c, a]; within a shard the Rust writer's order (dtype rank desc, then name): F32 c before U8 a
        Assert.Equal(["e", "b", "d", "c", "a"], asked);
    }

    [Fact]
    public void Streaming_WrongLengthFromTheProducer_FailsAndLeavesNoPartialFile()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.WriteShardedStreaming(dir.Path, "model",
            [new TensorSpec("w", DType.F32, [3])], 100, _ => new byte[8]));
        Assert.Contains("tensor 'w': 8 bytes of data", e.Message);
        Assert.Empty(dir.FileNames());
    }
}
