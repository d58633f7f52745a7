using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

public class FileApiTests
{
    [Fact]
    public void GetBytes_IsAViewOfTheMapping()
    {
        using var dir = new TempDir();
        string path = dir.File("v.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f, 2f, 3f], 3), SafetensorsWriter.I32("i", [9])]);
        using var file = SafetensorsFile.Open(path);
        var bytes = file.GetBytes("w");
        Assert.Equal(Bytes.Of(1f, 2f, 3f), bytes.ToArray());
        Assert.Equal(Bytes.Of(2f), file.GetBytes("w", 4, 4).ToArray());
        Assert.Equal(0, file.GetBytes("w", 12, 0).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => file.GetBytes("w", 9, 4).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => file.GetBytes("w", -1, 1).Length);

        // The span points into the file image: 8 + header length + Begin.
        long headerLength = BitConverter.ToInt64(File.ReadAllBytes(path), 0);
        Assert.Equal(File.ReadAllBytes(path).AsSpan((int)(8 + headerLength + file.Get("i").Begin), 4).ToArray(),
            file.GetBytes("i").ToArray());
    }

    [Fact]
    public void MissingKey_ThrowsNamingKeyAndFile()
    {
        using var dir = new TempDir();
        string path = dir.File("k.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f], 1)]);
        using var file = SafetensorsFile.Open(path);
        Assert.True(file.Contains("w"));
        Assert.False(file.Contains("nope"));
        foreach (Action a in new Action[] { () => file.Get("nope"), () => file.GetBytes("nope"), () => file.ReadFloat32("nope"),
                     () => file.ReadInt32("nope") })
        {
            var e = Assert.Throws<KeyNotFoundException>(a);
            Assert.Contains("'nope'", e.Message);
            Assert.Contains(path, e.Message);
        }
    }

    [Fact]
    public void ReadFloat32_IntoSpan_ChecksLength()
    {
        using var dir = new TempDir();
        string path = dir.File("s.safetensors");
        SafetensorsWriter.Write(path, [new TensorToWrite("h", DType.BF16, [2], Bytes.Of(HalfBits.FloatToBf16(0.5f), (ushort)0xC040))]);
        using var file = SafetensorsFile.Open(path);
        var dst = new float[3];
        file.ReadFloat32("h", dst.AsSpan(1));
        Assert.Equal([0f, 0.5f, -3f], dst);
        Assert.Throws<ArgumentException>(() => file.ReadFloat32("h", new float[3]));
    }

    [Fact]
    public void AfterDispose_DataAccessThrows()
    {
        using var dir = new TempDir();
        string path = dir.File("d.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f], 1)]);
        var file = SafetensorsFile.Open(path);
        file.Dispose();
        file.Dispose();
        Assert.Equal(1, file.Get("w").ElementCount);
        Assert.Throws<ObjectDisposedException>(() => file.GetBytes("w").Length);
        Assert.Throws<ObjectDisposedException>(() => file.ReadFloat32("w"));
    }

    [Fact]
    public void Open_HoldsTheFileOnlyUntilDispose()
    {
        using var dir = new TempDir();
        string good = dir.File("good.safetensors"), bad = dir.File("bad.safetensors");
        SafetensorsWriter.Write(good, [SafetensorsWriter.F32("w", [1f], 1)]);
        File.WriteAllBytes(bad, Bytes.Safetensors("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", new byte[4]));
        using (SafetensorsFile.Open(good))
            Assert.ThrowsAny<IOException>(() => new FileStream(good, FileMode.Open, FileAccess.ReadWrite, FileShare.None).Dispose());
        new FileStream(good, FileMode.Open, FileAccess.ReadWrite, FileShare.None).Dispose();
        Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(bad));
        new FileStream(bad, FileMode.Open, FileAccess.ReadWrite, FileShare.None).Dispose();
    }

    [Fact]
    public unsafe void F32AndI32Helpers_ViewTheArrays()
    {
        var f = new[] { 1f, -2f };
        var t = SafetensorsWriter.F32("f", f, 2);
        Assert.Equal(DType.F32, t.DType);
        Assert.Equal([2L], t.Shape);
        f[1] = 5f; // no copy: the tensor sees the change
        Assert.Equal(Bytes.Of(1f, 5f), t.Data.ToArray());
        using (var pin = t.Data[4..].Pin()) Assert.Equal(5f, *(float*)pin.Pointer);
        var i = SafetensorsWriter.I32("i", [3, 4, 5, 6], 2, 2);
        Assert.Equal(DType.I32, i.DType);
        Assert.Equal(Bytes.Of(3, 4, 5, 6), i.Data.ToArray());
    }
}
