using IlgpuTune.TestKit;
using System.Diagnostics;
using System.Text.Json.Serialization;
using IlgpuTune.Data.Datasets;
using Parquet.Serialization;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// Dataset files issue 13's fuzzing found mishandled: JSON strings with lone surrogate escapes (a raw exception deep in
/// the mapping, without the file), Parquet.Net exceptions without the file name, and a small parquet file whose corrupt
/// footer spun Parquet.Net at 100% CPU for minutes (the fixtures corrupt-footer-spin-*.parquet are three such files).
/// </summary>
public class DatasetValidationTests : IDisposable
{
    readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    string Dir => _temp.Path;

    string Write(string name, string text) => _temp.Write(name, text);

    [Fact]
    public void LoneSurrogatesAreNamedByFileLineAndField()
    {
        string jsonl = Write("a.jsonl", """
            {"conversation": [{"input": "ok \ud83d\ude00", "output": "fine"}]}
            {"conversation": [{"input": "bad \ud800 here", "output": "x"}]}
            {"conversation": [{"input": "i", "output": "x"}], "\udc00": 1}
            """);
        var e = Assert.Throws<DatasetException>(() => DatasetReader.Read(jsonl, DatasetFormat.Conversation));
        Assert.Equal(2, e.Errors.Count);
        Assert.Equal("a.jsonl:2", e.Errors[0].Location);
        Assert.Equal("conversation[0].input", e.Errors[0].Field);
        Assert.Contains("lone surrogate", e.Errors[0].Message);
        Assert.Equal("a.jsonl:3", e.Errors[1].Location);
        Assert.Equal("(a key)", e.Errors[1].Field);

        string json = Write("b.json", """
            [
              {"conversation": [{"input": "i", "output": "x"}]},
              {"conversation": [{"input": "i", "output": "\udfff"}]}
            ]
            """);
        var j = Assert.Single(Assert.Throws<DatasetException>(() => DatasetReader.Read(json, DatasetFormat.Conversation)).Errors);
        Assert.Equal("b.json:3: conversation[0].output: " + j.Message, j.ToString());

        string p = Path.Combine(Dir, "c.json");   // invalid UTF-8 bytes inside a string
        File.WriteAllBytes(p, [.. "[{\"conversation\": [{\"input\": \"a"u8, 0xC3, 0x28, .. "\", \"output\": \"x\"}]}]"u8]);
        var u = Assert.Single(Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Conversation)).Errors);
        Assert.Equal("c.json:1", u.Location);
        Assert.Equal("conversation[0].input", u.Field);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ACorruptFooterIsRefusedInsteadOfSpinning(int n)
    {
        string p = Path.Combine(Dir, "d.parquet");
        File.Copy(Fixtures.Path($"corrupt-footer-spin-{n}.parquet"), p);
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(p, DatasetFormat.Conversation));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"took {sw.Elapsed}");
        Assert.StartsWith("d.parquet: corrupt parquet footer", e.Message);
    }

    [Theory]
    [InlineData("", "0 bytes is too short")]
    [InlineData("PAR1xxxxPAR0", "not a parquet file")]
    [InlineData("PAR1xxxx\xff\xff\xff\x7fPAR1", "its length")]
    [InlineData("PAR1\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00PAR1", "not a readable parquet file")]   // an empty footer struct
    public void BrokenLayoutsNameTheFile(string latin1, string expected)
    {
        string p = Path.Combine(Dir, "d.parquet");
        File.WriteAllBytes(p, System.Text.Encoding.Latin1.GetBytes(latin1));
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(p, DatasetFormat.Conversation));
        Assert.StartsWith("d.parquet: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    public sealed class Turn
    {
        [JsonPropertyName("input")] public string? Input { get; set; }
        [JsonPropertyName("output")] public string? Output { get; set; }
    }

    public sealed class Row
    {
        [JsonPropertyName("conversation")] public List<Turn>? Conversation { get; set; }
    }

    [Fact]
    public async Task MutatedParquetFilesEndInOneNamedErrorQuickly()
    {
        string p = Path.Combine(Dir, "d.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new Row { Conversation = [new Turn { Input = "i", Output = "o" }] } }, p);
        byte[] good = File.ReadAllBytes(p);
        var rng = new Random(13);
        var unexpected = new List<string>();
        for (int i = 0; i < 150; i++)
        {
            var bad = (byte[])good.Clone();
            for (int k = 1 + rng.Next(6); k > 0; k--) bad[rng.Next(bad.Length)] ^= (byte)(1 << rng.Next(8));
            File.WriteAllBytes(p, bad);
            var sw = Stopwatch.StartNew();
            try
            {
                DatasetReader.Read(p, DatasetFormat.Conversation);
            }
            catch (InvalidDataException e) when (e.Message.StartsWith("d.parquet: ", StringComparison.Ordinal))
            {
            }
            catch (DatasetException)
            {
            }
            catch (Exception e)
            {
                unexpected.Add($"{i}: {e.GetType().Name}: {e.Message}");
            }
            if (sw.Elapsed > TimeSpan.FromSeconds(5)) unexpected.Add($"{i}: took {sw.Elapsed}");
        }
        Assert.Empty(unexpected);
    }
}
