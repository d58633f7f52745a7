using System.Buffers.Binary;
using System.Text;

namespace IlgpuTune.IO.Tests;

public class ValidationTests
{
    private const string Ok = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    /// <summary>(case, header JSON, data length, tensor key named in the message or null, expected message fragment).</summary>
    public static TheoryData<string, string, int, string?, string> BadHeaders => new()
    {
        { "not an object", """["a"]""", 0, null, "starting with '{'" },
        { "leading space", """ {}""", 0, null, "starting with '{'" },
        { "truncated JSON", """{"a":{"dtype":"F32",""", 0, null, "not valid JSON" },
        { "trailing garbage", "{" + Ok + "} x", 8, null, "not valid JSON" },
        { "trailing comma", "{" + Ok + ",}", 8, null, "not valid JSON" },
        { "entry not object", """{"a":[1]}""", 0, "a", "expected an object" },
        { "missing dtype", """{"a":{"shape":[2],"data_offsets":[0,8]}}""", 8, "a", "missing 'dtype'" },
        { "missing shape", """{"a":{"dtype":"F32","data_offsets":[0,8]}}""", 8, "a", "missing 'shape'" },
        { "missing offsets", """{"a":{"dtype":"F32","shape":[2]}}""", 8, "a", "missing 'data_offsets'" },
        { "dtype not string", """{"a":{"dtype":5,"shape":[2],"data_offsets":[0,8]}}""", 8, "a", "'dtype' must be a string" },
        { "unknown dtype", """{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}""", 8, "a", "unknown dtype 'F33'" },
        { "dtype wrong case", """{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}""", 8, "a", "unknown dtype 'f32'" },
        { "shape not array", """{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}""", 8, "a", "'shape' must be an array" },
        { "negative dim", """{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, "a", "found -2" },
        { "fractional dim", """{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}""", 8, "a", "found 1.5" },
        { "string dim", """{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}""", 8, "a", "found String" },
        { "huge dim", """{"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}}""", 8, "a", "non-negative" },
        { "three offsets", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}""", 8, "a", "[begin, end]" },
        { "negative offset", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}""", 8, "a", "found -8" },
        { "end before begin", """{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}""", 8, "a", "end is before begin" },
        { "duplicate field", """{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "a", "duplicate field" },
        { "duplicate key", "{" + Ok + "," + Ok + "}", 8, "a", "duplicate key" },
        { "hole at start", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "a", "expected 0" },
        { "hole between", "{" + Ok + ""","b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}""", 16, "b", "expected 8" },
        { "overlap", "{" + Ok + ""","b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "b", "expected 8" },
        { "size mismatch", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4, "a", "needs 8" },
        { "scalar size", """{"a":{"dtype":"F64","shape":[],"data_offsets":[0,4]}}""", 4, "a", "needs 8" },
        { "overflow", """{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}""", 8, "a", "overflows" },
        { "sub-byte", """{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}""", 2, "a", "whole number of bytes" },
        { "trailing bytes", "{" + Ok + "}", 9, null, "data buffer is 9 bytes" },
        { "data too short", "{" + Ok + "}", 4, null, "data buffer is 4 bytes" },
        { "metadata not object", """{"__metadata__":["pt"]}""", 0, null, "__metadata__ must be an object" },
        { "metadata number", """{"__metadata__":{"format":1}}""", 0, null, "value of 'format' must be a string" },
        { "metadata nested", """{"__metadata__":{"format":{"a":"b"}}}""", 0, null, "value of 'format' must be a string" },
        { "metadata duplicate", """{"__metadata__":{"k":"1","k":"2"}}""", 0, null, "duplicate key 'k'" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void Open_RejectsBadHeader(string name, string header, int dataLength, string? key, string fragment)
    {
        using var dir = new TempDir();
        string path = dir.File(name.Replace(' ', '_') + ".safetensors");
        File.WriteAllBytes(path, Bytes.Safetensors(header, new byte[dataLength]));
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        if (key != null) Assert.Contains($"tensor '{key}'", e.Message);
        Assert.Contains(fragment, e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    public void Open_RejectsFileShorterThan8Bytes(int length)
    {
        using var dir = new TempDir();
        string path = dir.File("short.safetensors");
        File.WriteAllBytes(path, new byte[length]);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("at least 8", e.Message);
    }

    [Theory]
    [InlineData(100_000_001UL, "exceeds the limit")]
    [InlineData(ulong.MaxValue, "exceeds the limit")]
    [InlineData(3UL, "runs past the end")]
    [InlineData(0UL, "header is empty")]
    public void Open_RejectsBadHeaderLength(ulong n, string fragment)
    {
        using var dir = new TempDir();
        string path = dir.File("len.safetensors");
        var bytes = new byte[10];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, n);
        bytes[8] = (byte)'{';
        bytes[9] = (byte)'}';
        File.WriteAllBytes(path, n == 0 ? bytes[..8] : bytes);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(fragment, e.Message);
    }

    [Fact]
    public void Open_RejectsInvalidUtf8()
    {
        using var dir = new TempDir();
        string path = dir.File("utf8.safetensors");
        var header = Encoding.UTF8.GetBytes("""{"__metadata__":{"k":"v?"}}""");
        header[Array.IndexOf(header, (byte)'?')] = 0xFF;
        File.WriteAllBytes(path, Bytes.Safetensors(header, []));
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path));
        Assert.Contains("not valid UTF-8", e.Message);
    }

    [Fact]
    public void Open_AcceptsEmptyHeaderObjectAndZeroSizeTensorsAtTheEnd()
    {
        using var dir = new TempDir();
        string path = dir.File("ok.safetensors");
        File.WriteAllBytes(path, Bytes.Safetensors("{}", []));
        using (var f = SafetensorsFile.Open(path)) Assert.Empty(f.Tensors);

        File.WriteAllBytes(path, Bytes.Safetensors(
            "{" + Ok + ""","z":{"dtype":"I32","shape":[0,3],"data_offsets":[8,8]},"y":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}""",
            new byte[8]));
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["a", "z", "y"], file.Tensors.Select(t => t.Name));
    }
}
