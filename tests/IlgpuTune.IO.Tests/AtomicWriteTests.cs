using System.Buffers;
using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

public class AtomicWriteTests
{
    [Fact]
    public void Write_LeavesOnlyTheTarget()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("a.safetensors"), [SafetensorsWriter.F32("w", [1f], 1)]);
        SafetensorsWriter.Write(dir.File("a.safetensors"), [SafetensorsWriter.F32("w", [2f], 1)]);
        Assert.Equal(["a.safetensors"], dir.FileNames());
        using var f = SafetensorsFile.Open(dir.File("a.safetensors"));
        Assert.Equal([2f], f.ReadFloat32("w"));
    }

    public static TheoryData<string> InvalidWrites => new() { "duplicate", "length", "negative dim", "metadata name", "null metadata" };

    [Theory]
    [MemberData(nameof(InvalidWrites))]
    public void Write_ValidationFailure_LeavesExistingFileUntouched(string kind)
    {
        using var dir = new TempDir();
        string path = dir.File("a.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f], 1)]);
        var before = File.ReadAllBytes(path);
        var ok = SafetensorsWriter.F32("ok", [1f, 2f], 2);
        Action write = kind switch
        {
            "duplicate" => () => SafetensorsWriter.Write(path, [ok, SafetensorsWriter.I32("ok", [1], 1)]),
            "length" => () => SafetensorsWriter.Write(path, [ok, new TensorToWrite("b", DType.BF16, [3], new byte[4])]),
            "negative dim" => () => SafetensorsWriter.Write(path, [new TensorToWrite("n", DType.U8, [-1], Array.Empty<byte>())]),
            "metadata name" => () => SafetensorsWriter.Write(path, [SafetensorsWriter.F32("__metadata__", [1f], 1)]),
            _ => () => SafetensorsWriter.Write(path, [ok], new Dictionary<string, string> { ["k"] = null! }),
        };
        var e = Assert.Throws<ArgumentException>(write);
        if (kind != "null metadata") Assert.Contains(kind == "metadata name" ? "__metadata__" : "'", e.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["a.safetensors"], dir.FileNames());
    }

    [Fact]
    public void Write_FailureWhileWriting_LeavesExistingFileUntouchedAndNoTmp()
    {
        using var dir = new TempDir();
        string path = dir.File("a.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f], 1)]);
        var before = File.ReadAllBytes(path);
        var failing = new TensorToWrite("bad", DType.U8, [16], new FailingMemory().Create(16));
        Assert.Throws<IOException>(() => SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [9f], 1), failing]));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["a.safetensors"], dir.FileNames());
    }

    [Fact]
    public void Write_OverAnOpenFile_KeepsTheOldMappingValid()
    {
        using var dir = new TempDir();
        string path = dir.File("a.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [1f, 2f], 2)]);
        using var old = SafetensorsFile.Open(path);
        SafetensorsWriter.Write(path, [SafetensorsWriter.F32("w", [3f, 4f], 2)]);
        Assert.Equal([1f, 2f], old.ReadFloat32("w"));
        using var fresh = SafetensorsFile.Open(path);
        Assert.Equal([3f, 4f], fresh.ReadFloat32("w"));
    }

    [Fact]
    public void Write_MissingDirectory_Throws()
    {
        using var dir = new TempDir();
        Assert.Throws<DirectoryNotFoundException>(() =>
            SafetensorsWriter.Write(Path.Combine(dir.Path, "no", "a.safetensors"), [SafetensorsWriter.F32("w", [1f], 1)]));
        Assert.Empty(dir.FileNames());
    }

    // Memory whose bytes cannot be read: makes the writer fail after the temp file is created.
    private sealed class FailingMemory : MemoryManager<byte>
    {
        public Memory<byte> Create(int length) => CreateMemory(length);
        public override Span<byte> GetSpan() => throw new IOException("disk on fire");
        public override MemoryHandle Pin(int elementIndex = 0) => throw new IOException("disk on fire");
        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }
}
