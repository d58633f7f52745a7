using System.Buffers.Binary;
using System.Text;

namespace IlgpuTune.IO.Tests;

/// <summary>A fresh directory under the system temp folder, deleted on Dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "ilgputune-io-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string[] FileNames() => Directory.GetFiles(Path).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

internal static class Bytes
{
    /// <summary>A raw safetensors image: 8-byte little-endian header length, the header as UTF-8, then the data.</summary>
    public static byte[] Safetensors(string header, byte[] data) => Safetensors(Encoding.UTF8.GetBytes(header), data);

    public static byte[] Safetensors(byte[] header, byte[] data)
    {
        var file = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)header.Length);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Length);
        return file;
    }

    /// <summary>Pads with spaces to a multiple of 8, as the writer does.</summary>
    public static string Padded(string header) => header + new string(' ', (8 - Encoding.UTF8.GetByteCount(header) % 8) % 8);

    public static byte[] Of<T>(params T[] values) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>Python-style byte literal, e.g. "@\x00\x00" (each char is one byte 0..255).</summary>
    public static byte[] Latin1(string s) => s.Select(c => checked((byte)c)).ToArray();
}
