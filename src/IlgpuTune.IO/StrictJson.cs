using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuTune.IO;

/// <summary>
/// Parses a JSON object a user handed us (config.json, a quant_state) checking up front what JsonNode would only trip
/// over later with a raw exception: duplicate keys (JsonObject throws ArgumentException on first access) and strings that
/// are not valid UTF-16 (a lone surrogate escape such as "\ud800"). Every problem is one InvalidDataException naming the
/// source and the key.
/// </summary>
public static class StrictJson
{
    public static JsonObject ParseObject(string text, string source) => ParseObject(Encoding.UTF8.GetBytes(text), source);

    public static JsonObject ParseObject(ReadOnlyMemory<byte> utf8, string source)
    {
        try
        {
            using var doc = JsonDocument.Parse(utf8);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: expected a JSON object, got {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}");
            Check(doc.RootElement, "", source);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message})", e);
        }
        return (JsonObject)JsonNode.Parse(utf8.Span)!;
    }

    static void Check(JsonElement e, string path, string source)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                var seen = new HashSet<string>(StringComparer.Ordinal);
                foreach (var p in e.EnumerateObject())
                {
                    string name;
                    try
                    {
                        name = p.Name;
                    }
                    catch (InvalidOperationException ex)
                    {
                        throw new InvalidDataException($"{source}: a key {Where(path)} is not valid UTF-16 text (a lone surrogate escape?)", ex);
                    }
                    string child = path.Length == 0 ? name : $"{path}.{name}";
                    if (!seen.Add(name)) throw new InvalidDataException($"{source}: duplicate key '{child}'");
                    Check(p.Value, child, source);
                }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in e.EnumerateArray()) Check(item, $"{path}[{i++}]", source);
                break;
            case JsonValueKind.String:
                try
                {
                    e.GetString();
                }
                catch (InvalidOperationException ex)
                {
                    throw new InvalidDataException($"{source}: key '{path}' holds a string that is not valid UTF-16 text (a lone surrogate escape?)", ex);
                }
                break;
        }
    }

    static string Where(string path) => path.Length == 0 ? "at the top level" : $"in '{path}'";
}
