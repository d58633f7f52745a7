namespace IlgpuTune.IO.Tests;

/// <summary>
/// Torch and JSON inputs issue 13's fuzzing found mishandled: files under 4 bytes, storage sizes torch writes as LONG1,
/// data-size problems labelled as unsafe pickles, duplicate keys and invalid UTF-16 in a config.
/// </summary>
public class ReaderValidationTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public void TorchFilesUnderFourBytesAreNamedNotADisposedStream(int length)
    {
        using var dir = new TempDir();
        string path = dir.File("pytorch_model.bin");
        File.WriteAllBytes(path, new byte[length]);
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Open(path));
        Assert.Contains($"{length} bytes is too short for a PyTorch checkpoint", e.Message);
    }

    [Fact]
    public void StorageSizesInLong1AreIntsAndASizeMismatchIsNotCalledUnsafe()
    {
        // torch pickles a storage of 2^31 elements with LONG1; the record here holds only 16 bytes.
        long numel = 1L << 31;
        var pickle = TorchFiles.StateDictPickle([("w", new FakeTensor("FloatStorage", "0", numel, 0, [4], [1]))]);
        Assert.Contains(Windows(pickle), w => w[0] == 0x8A && w[1] == 0x05);   // LONG1, 5 bytes
        using var dir = new TempDir();
        string path = dir.File("pytorch_model.bin");
        TorchFiles.WriteZip(path, pickle, new Dictionary<string, byte[]> { ["0"] = new byte[16] });
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Open(path));
        Assert.Contains($"needs {numel * 4} bytes; its record holds 16", e.Message);
        Assert.DoesNotContain("unsafe", e.Message);
        Assert.DoesNotContain("non-negative int", e.Message);
    }

    [Fact]
    public void TruncatedPicklesAreMalformedNotUnsafe()
    {
        var full = TorchFiles.StateDictPickle([("w", new FakeTensor("FloatStorage", "0", 4, 0, [4], [1]))]);
        using var dir = new TempDir();
        string path = dir.File("pytorch_model.bin");
        TorchFiles.WriteZip(path, full[..(full.Length / 2)], new Dictionary<string, byte[]> { ["0"] = new byte[16] });
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Open(path));
        Assert.Contains("malformed pickle", e.Message);
        Assert.DoesNotContain("unsafe", e.Message);
    }

    [Theory]
    [InlineData("""{"a": 1, "a": 2}""", "duplicate key 'a'")]
    [InlineData("""{"rope_scaling": {"factor": 1, "factor": 2}}""", "duplicate key 'rope_scaling.factor'")]
    [InlineData("""{"model_type": "\ud800"}""", "key 'model_type' holds a string that is not valid UTF-16")]
    [InlineData("""{"\udc00x": 1}""", "a key at the top level is not valid UTF-16")]
    [InlineData("""{"eos": ["\ud800\ud800"]}""", "key 'eos[0]'")]
    [InlineData("""[1]""", "expected a JSON object")]
    [InlineData("""{"a": """, "not valid JSON")]
    public void StrictJsonNamesTheFileAndTheKey(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => StrictJson.ParseObject(json, "/m/config.json"));
        Assert.StartsWith("/m/config.json: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("""{"\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""")]
    [InlineData("""{"w":{"dtype":"F\udc00","shape":[1],"data_offsets":[0,4]}}""")]
    public void SafetensorsHeaderWithALoneSurrogateIsNamed(string header)
    {
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        var h = System.Text.Encoding.UTF8.GetBytes(header);
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)h.Length), .. h, 0, 0, 0, 0]);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));
        Assert.StartsWith(path + ": ", e.Message);
    }

    static IEnumerable<byte[]> Windows(byte[] b) => Enumerable.Range(0, b.Length - 1).Select(i => new[] { b[i], b[i + 1] });
}
