namespace IlgpuTune.IO;

/// <summary>Named tensors read as float32 or int32, whatever the checkpoint format (safetensors or torch.save).</summary>
public interface IWeightSource : IDisposable
{
    /// <summary>The file opened: a weights file or an index .json.</summary>
    string Path { get; }

    /// <summary>Tensor names in the checkpoint's order (an index's weight_map order for shards).</summary>
    IReadOnlyCollection<string> Names { get; }

    bool Contains(string name);
    long[] Shape(string name);

    /// <summary>The stored dtype as a safetensors dtype string (formats.md §1.2; torch-only "C128" for complex128).</summary>
    string DTypeOf(string name);

    float[] ReadFloat32(string name);

    /// <summary><see cref="ReadFloat32(string)"/> into <paramref name="destination"/> (exactly the tensor's element count), so
    /// that a caller can reuse its buffers.</summary>
    void ReadFloat32(string name, Span<float> destination) => ReadFloat32(name).CopyTo(destination);

    int[] ReadInt32(string name);

    /// <summary>
    /// The tensor's elements as stored, little-endian and row-major, any dtype (e.g. the uint8 tensors of a bitsandbytes
    /// 4-bit checkpoint). Sources that cannot give raw bytes throw NotSupportedException.
    /// </summary>
    byte[] ReadBytes(string name) =>
        throw new NotSupportedException($"{GetType().Name} ({Path}) cannot read the raw bytes of tensor '{name}'");

    /// <summary>
    /// The tensor's bytes as stored, viewing a memory-mapped file without a copy (dispose it to drop the view; it stays
    /// valid after the source is disposed), or null where the source cannot map them (torch pickles, tensors over 2 GiB).
    /// </summary>
    System.Buffers.MemoryManager<byte>? ShareBytes(string name) => null;
}

public static class WeightSource
{
    /// <summary>
    /// Opens a model's weights as transformers does: in a directory, "<paramref name="safetensorsName"/>", then its
    /// ".index.json", then "<paramref name="torchName"/>", then its ".index.json". A file path opens that file (an index
    /// .json by its name: "*.safetensors.index.json" is safetensors, any other a torch index).
    /// </summary>
    public static IWeightSource Open(string pathOrDirectory, string safetensorsName = "model.safetensors",
        string torchName = TorchCheckpoint.FileName)
    {
        string p = Path.GetFullPath(pathOrDirectory);
        if (File.Exists(p))
        {
            return p.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
                   || p.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase)
                ? SafetensorsModel.Open(p)
                : TorchCheckpoint.Open(p);
        }
        if (!Directory.Exists(p)) throw new FileNotFoundException($"{p} does not exist", p);
        string[] candidates = [safetensorsName, safetensorsName + ".index.json", torchName, torchName + ".index.json"];
        foreach (var name in candidates)
        {
            string file = Path.Combine(p, name);
            if (File.Exists(file)) return Open(file);
        }
        throw new FileNotFoundException($"{p} has no weights: none of {string.Join(", ", candidates)}", Path.Combine(p, candidates[0]));
    }
}
