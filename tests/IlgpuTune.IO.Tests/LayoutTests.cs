using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

public class LayoutTests
{
    [Fact]
    public void Writer_ByteLayout_MatchesHandWrittenFile()
    {
        using var dir = new TempDir();
        string path = dir.File("layout.safetensors");
        // Given out of order: the writer sorts by dtype (Rust enum order, descending: F32, I32, BF16, F16, U8), then name.
        SafetensorsWriter.Write(path, [
            new TensorToWrite("z", DType.U8, [3], new byte[] { 1, 2, 3 }),
            new TensorToWrite("a", DType.BF16, [1], Bytes.Of(HalfBits.FloatToBf16(2.25f))),
            SafetensorsWriter.I32("c", [7]),
            new TensorToWrite("y", DType.F16, [1], Bytes.Of(HalfBits.FloatToF16(-1f))),
            SafetensorsWriter.F32("b2", [3f], 1),
            SafetensorsWriter.F32("b", [1f, 2f], 2),
        ]);

        string header = Bytes.Padded(
            """{"__metadata__":{"format":"pt"},"""
            + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            + "\"b2\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
            + "\"c\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[12,16]},"
            + "\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[16,18]},"
            + "\"y\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[18,20]},"
            + "\"z\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[20,23]}}");
        byte[] data =
        [
            0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40, // b = 1f, 2f
            0x00, 0x00, 0x40, 0x40, // b2 = 3f
            0x07, 0x00, 0x00, 0x00, // c = 7
            0x10, 0x40, // a = bf16 2.25
            0x00, 0xBC, // y = f16 -1
            0x01, 0x02, 0x03, // z
        ];
        var expected = Bytes.Safetensors(header, data);
        Assert.Equal(0, (expected.Length - data.Length) % 8);
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void Writer_Metadata_FormatFirstThenCallerKeysInOrder()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        SafetensorsWriter.Write(path, [], new Dictionary<string, string> { ["zeta"] = "1", ["alpha"] = "2" });
        var expected = Bytes.Safetensors(Bytes.Padded("""{"__metadata__":{"format":"pt","alpha":"2","zeta":"1"}}"""), []);
        Assert.Equal(expected, File.ReadAllBytes(path));

        SafetensorsWriter.Write(path, [], new Dictionary<string, string> { ["x"] = "1", ["format"] = "mlx" });
        expected = Bytes.Safetensors(Bytes.Padded("""{"__metadata__":{"format":"mlx","x":"1"}}"""), []);
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void Writer_EscapesStringsLikeSerdeJson()
    {
        using var dir = new TempDir();
        string path = dir.File("e.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.I32("q\"\\\n\t\u0001é", [1])]);
        string header = Bytes.Padded(
            "{\"__metadata__\":{\"format\":\"pt\"},\"q\\\"\\\\\\n\\t\\u0001é\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}");
        Assert.Equal(Bytes.Safetensors(header, Bytes.Of(1)), File.ReadAllBytes(path));
    }

    [Fact]
    public void Writer_SameDType_OrdersNamesByCodePoint()
    {
        using var dir = new TempDir();
        string path = dir.File("o.safetensors");
        // UTF-16 ordinal puts U+FF5E after U+1F600's surrogates, UTF-8 (Rust) puts it before.
        string[] names = ["b", "B", "a10", "a2", "\uFF5E", "😀", "a"];
        SafetensorsWriter.Write(path, names.Select(n => SafetensorsWriter.I32(n, [0])));
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["B", "a", "a10", "a2", "b", "\uFF5E", "😀"], file.Tensors.Select(t => t.Name));
    }

    // Byte strings below are copied from the upstream test suite (huggingface/safetensors@24b0b28
    // bindings/python/tests/test_pt_comparison.py and test_simple.py): the exact output of safetensors.torch.save.

    [Fact]
    public void Reader_UpstreamTorchBf16Golden()
    {
        using var dir = new TempDir();
        string path = dir.File("golden.safetensors");
        File.WriteAllBytes(path, Bytes.Latin1(
            "@\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}    \x10@\x80?\x80?\x80?"));
        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Metadata);
        Assert.Equal([2L, 2L], file.Get("test").Shape);
        Assert.Equal([2.25f, 1f, 1f, 1f], file.ReadFloat32("test"));
    }

    [Fact]
    public void Reader_UpstreamI32Golden()
    {
        using var dir = new TempDir();
        string path = dir.File("golden.safetensors");
        File.WriteAllBytes(path, Bytes.Latin1(
            "@\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}   "
            + " \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00"));
        using var file = SafetensorsFile.Open(path);
        Assert.Equal([0, 0, 0, 1], file.ReadInt32("test"));
    }

    [Fact]
    public void Reader_UpstreamAlignmentGolden_MatchesOurOrder()
    {
        using var dir = new TempDir();
        string path = dir.File("golden.safetensors");
        var golden = Bytes.Latin1(
            "\x80\x00\x00\x00\x00\x00\x00\x00{\"test1\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
            + "\"test2\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[16,24]}}"
            + "      \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        File.WriteAllBytes(path, golden);
        using (var file = SafetensorsFile.Open(path))
        {
            Assert.Equal(["test1", "test2"], file.Tensors.Select(t => t.Name));
            Assert.Equal(new float[4], file.ReadFloat32("test2"));
        }

        // Our writer gives the same bytes apart from the __metadata__ it always adds.
        string ours = dir.File("ours.safetensors");
        SafetensorsWriter.Write(ours, [
            new TensorToWrite("test2", DType.F16, [2, 2], new byte[8]),
            new TensorToWrite("test1", DType.I32, [2, 2], new byte[16]),
        ]);
        string header = Bytes.Padded("""{"__metadata__":{"format":"pt"},"test1":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},"""
            + "\"test2\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[16,24]}}");
        Assert.Equal(Bytes.Safetensors(header, new byte[24]), File.ReadAllBytes(ours));
    }

    [Fact]
    public void Reader_UpstreamMetadataGolden()
    {
        using var dir = new TempDir();
        string path = dir.File("golden.safetensors");
        File.WriteAllBytes(path, Bytes.Latin1(
            "f\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\":{\"framework\":\"pt\"},\"test1\":{\"dtype\":\"I32\",\"shape\":[2,2],"
            + "\"data_offsets\":[0,16]}}       \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"));
        using var file = SafetensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["framework"]);
        Assert.Equal(new int[4], file.ReadInt32("test1"));
    }

    [Fact]
    public void Reader_ToleratesUnpaddedHeaderAnyOrderUnknownFieldsAndNullMetadata()
    {
        using var dir = new TempDir();
        string path = dir.File("odd.safetensors");
        // 'late' is listed first but stored second; header length is odd so the data is unaligned.
        string header = """{"late":{"data_offsets":[4,6],"shape":[1],"dtype":"BF16","extra":{"x":[1,23]}},"""
            + "\"__metadata__\":null,\"early\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}";
        Assert.Equal(1, header.Length % 2);
        File.WriteAllBytes(path, Bytes.Safetensors(header, [.. Bytes.Of(5f), .. Bytes.Of(HalfBits.FloatToBf16(-3f))]));
        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Metadata);
        Assert.Equal(["early", "late"], file.Tensors.Select(t => t.Name));
        Assert.Equal([5f], file.ReadFloat32("early"));
        Assert.Equal([-3f], file.ReadFloat32("late"));
    }
}
