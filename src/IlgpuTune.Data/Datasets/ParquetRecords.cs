using System.Text.Json;
using System.Text.Json.Nodes;
using Parquet.Serialization;

namespace IlgpuTune.Data.Datasets;

/// <summary>Parquet rows as JSON records ("file row N", 1-based), nested lists and structs included.</summary>
public static class ParquetRecords
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        string name = Path.GetFileName(path);
        Parquet.Serialization.DeserializationResult<Dictionary<string, object>> result;
        using (var stream = File.OpenRead(path)) result = ParquetSerializer.DeserializeUntypedAsync(stream).GetAwaiter().GetResult();
        int n = 0;
        foreach (var row in result.Data)
        {
            n++;
            var json = JsonSerializer.SerializeToElement(ToNode(row));
            yield return new RawRecord(json, $"{name} row {n}");
        }
    }

    static JsonNode? ToNode(object? v) => v switch
    {
        null => null,
        IDictionary<string, object?> d => new JsonObject(d.Select(kv => KeyValuePair.Create(kv.Key, ToNode(kv.Value)))),
        string s => JsonValue.Create(s),
        System.Collections.IEnumerable e => new JsonArray(e.Cast<object?>().Select(ToNode).ToArray()),
        bool b => JsonValue.Create(b),
        _ => JsonValue.Create(Convert.ToDouble(v, System.Globalization.CultureInfo.InvariantCulture)),
    };
}
