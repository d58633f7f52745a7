using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

/// <summary>SafetensorsFile.ShareBytes: a view of the mapping that outlives the file object (tensors keep weights mapped).</summary>
public class SharedBytesTests
{
    [Fact]
    public void SharedBytes_ViewTheMapping_AndStayValidAfterTheFileIsDisposed()
    {
        using var dir = new TempDir();
        string path = dir.File("s.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f, 2f, 3f], 3), SafetensorsWriter.I32("i", [9])]);
        var file = SafetensorsFile.Open(path);
        var shared = file.ShareBytes("w")!;
        System.Buffers.MemoryManager<byte> viaModel;
        using (IWeightSource model = SafetensorsModel.Open(path)) viaModel = model.ShareBytes("i")!;
        Assert.Equal(file.ReadBytes("w"), shared.GetSpan().ToArray());
        unsafe
        {
            fixed (byte* a = shared.GetSpan(), b = file.GetBytes("w")) Assert.True(a == b);
        }
        file.Dispose();
        Assert.Equal(Bytes.Of(1f, 2f, 3f), shared.GetSpan().ToArray());
        Assert.Equal(BitConverter.GetBytes(9), viaModel.GetSpan().ToArray());
        ((IDisposable)shared).Dispose();
        ((IDisposable)shared).Dispose(); // twice is harmless
        Assert.Throws<ObjectDisposedException>(() => shared.GetSpan());
        ((IDisposable)viaModel).Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.ShareBytes("w"));
    }

    [Fact]
    public void SourcesWithoutAMapping_ShareNothing()
    {
        using IWeightSource source = new NoMapping();
        Assert.Null(source.ShareBytes("w"));
    }

    private sealed class NoMapping : IWeightSource
    {
        public string Path => "none";
        public IReadOnlyCollection<string> Names => ["w"];
        public bool Contains(string name) => name == "w";
        public long[] Shape(string name) => [1];
        public string DTypeOf(string name) => "F32";
        public float[] ReadFloat32(string name) => [1f];
        public int[] ReadInt32(string name) => [1];
        public void Dispose() { }
    }
}
