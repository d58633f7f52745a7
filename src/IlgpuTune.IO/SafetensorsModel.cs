using System.Text.Json;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO;

/// <summary>
/// The tensors of a model stored as one safetensors file or as shards listed by an index (formats.md §1.4). Opening a
/// directory follows transformers: "model.safetensors" if present, else "model.safetensors.index.json" (both names derive
/// from <c>indexName</c>, so "adapter_model.safetensors.index.json" selects "adapter_model.safetensors").
/// </summary>
public sealed class SafetensorsModel : IWeightSource
{
    private const string IndexSuffix = ".index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _fileOf;
    private readonly List<string> _names;

    /// <summary>The file opened: the single .safetensors file or the index .json.</summary>
    public string Path { get; }

    /// <summary>Tensor names: the file's order for one file, the weight_map's order for an index.</summary>
    public IReadOnlyCollection<string> Names => _names.AsReadOnly();

    /// <summary>The distinct files, in order of first appearance.</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files.AsReadOnly();

    private SafetensorsModel(string path, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> fileOf,
        List<string> names)
    {
        Path = path;
        _files = files;
        _fileOf = fileOf;
        _names = names;
    }

    /// <param name="pathOrDirectory">A model directory, a .safetensors file, or an index .json file.</param>
    public static SafetensorsModel Open(string pathOrDirectory, string indexName = "model.safetensors.index.json")
    {
        string p = System.IO.Path.GetFullPath(pathOrDirectory);
        if (File.Exists(p))
            return p.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? FromIndex(p) : FromFile(p);
        if (!Directory.Exists(p))
            throw new FileNotFoundException($"{p} does not exist", p);
        string? single = indexName.EndsWith(IndexSuffix, StringComparison.Ordinal) ? indexName[..^IndexSuffix.Length] : null;
        if (single != null && File.Exists(System.IO.Path.Combine(p, single)))
            return FromFile(System.IO.Path.Combine(p, single));
        if (File.Exists(System.IO.Path.Combine(p, indexName)))
            return FromIndex(System.IO.Path.Combine(p, indexName));
        throw new FileNotFoundException(single == null
            ? $"{p} has no {indexName}"
            : $"{p} has neither {single} nor {indexName}", System.IO.Path.Combine(p, indexName));
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);

    public SafetensorsFile FileOf(string name) => _fileOf.TryGetValue(name, out var f)
        ? f
        : throw new KeyNotFoundException($"tensor '{name}' not found in {Path}");

    public TensorInfo Get(string name) => FileOf(name).Get(name);
    public long[] Shape(string name) => (long[])Get(name).Shape.Clone();
    public string DTypeOf(string name) => Get(name).DType;
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);
    public void ReadFloat32(string name, Span<float> destination) => FileOf(name).ReadFloat32(name, destination);
    public int[] ReadInt32(string name) => FileOf(name).ReadInt32(name);
    public byte[] ReadBytes(string name) => FileOf(name).ReadBytes(name);

    public System.Buffers.MemoryManager<byte>? ShareBytes(string name) => FileOf(name).ShareBytes(name);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }

    private static SafetensorsModel FromFile(string path)
    {
        var file = SafetensorsFile.Open(path);
        var names = file.Tensors.Select(t => t.Name).ToList();
        return new SafetensorsModel(path, [file], names.ToDictionary(n => n, _ => file, StringComparer.Ordinal), names);
    }

    private static SafetensorsModel FromIndex(string indexPath)
    {
        var files = new List<SafetensorsFile>();
        var fileOf = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var names = new List<string>();
        try
        {
            foreach (var (name, shardPath) in ResolveWeightMap(indexPath))
            {
                var file = files.Find(f => f.Path == shardPath);
                if (file is null)
                {
                    file = SafetensorsFile.Open(shardPath);
                    files.Add(file);
                }
                if (!file.Contains(name))
                    throw new InvalidDataException(
                        $"{indexPath}: weight_map maps '{name}' to {shardPath}, which has no tensor '{name}'");
                fileOf.Add(name, file);
                names.Add(name);
            }
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
        return new SafetensorsModel(indexPath, files, fileOf, names);
    }

    /// <summary>An index's weight_map as (tensor name, full shard path) in file order; every shard must exist inside the
    /// index's directory. Shared with the torch reader (pytorch_model.bin.index.json has the same JSON).</summary>
    internal static List<(string Name, string ShardPath)> ResolveWeightMap(string indexPath)
    {
        string dir = System.IO.Path.GetDirectoryName(indexPath)!;
        string dirPrefix = System.IO.Path.EndsInDirectorySeparator(dir) ? dir : dir + System.IO.Path.DirectorySeparatorChar;
        var result = new List<(string, string)>();
        var checkedShards = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shard) in ReadWeightMap(indexPath))
        {
            string shardPath = System.IO.Path.GetFullPath(System.IO.Path.Combine(dir, shard));
            if (checkedShards.Add(shardPath))
            {
                if (!shardPath.StartsWith(dirPrefix, StringComparison.Ordinal))
                    throw new InvalidDataException(
                        $"{indexPath}: weight_map maps '{name}' to '{shard}', which is outside the model directory");
                if (!File.Exists(shardPath))
                    throw new InvalidDataException($"{indexPath}: weight_map maps '{name}' to {shardPath}, which does not exist");
            }
            result.Add((name, shardPath));
        }
        return result;
    }

    // {"metadata": {...}, "weight_map": {"name": "file", ...}}; other top-level keys are ignored.
    private static List<KeyValuePair<string, string>> ReadWeightMap(string indexPath)
    {
        var bytes = File.ReadAllBytes(indexPath).AsSpan();
        if (bytes.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
        var reader = new Utf8JsonReader(bytes);
        List<KeyValuePair<string, string>>? map = null;
        try
        {
            reader.Read();
            if (reader.TokenType != JsonTokenType.StartObject)
                throw new InvalidDataException($"{indexPath}: expected a JSON object, found {reader.TokenType}");
            var topKeys = new HashSet<string>(StringComparer.Ordinal);
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                string key = reader.GetString()!;
                if (!topKeys.Add(key)) throw new InvalidDataException($"{indexPath}: duplicate key '{key}'");
                reader.Read();
                if (key != "weight_map")
                {
                    reader.Skip();
                    continue;
                }
                if (reader.TokenType != JsonTokenType.StartObject)
                    throw new InvalidDataException($"{indexPath}: weight_map must be an object, found {reader.TokenType}");
                map = [];
                var names = new HashSet<string>(StringComparer.Ordinal);
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    string name = reader.GetString()!;
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String)
                        throw new InvalidDataException(
                            $"{indexPath}: weight_map value of '{name}' must be a file name, found {reader.TokenType}");
                    if (!names.Add(name))
                        throw new InvalidDataException($"{indexPath}: weight_map has duplicate key '{name}'");
                    map.Add(new(name, reader.GetString()!));
                }
            }
            reader.Read();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{indexPath}: not valid JSON: {e.Message}", e);
        }
        return map ?? throw new InvalidDataException($"{indexPath}: missing 'weight_map'");
    }
}
