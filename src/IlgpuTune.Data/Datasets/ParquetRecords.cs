using System.Text.Json;
using System.Text.Json.Nodes;
using Parquet.Serialization;

namespace IlgpuTune.Data.Datasets;

/// <summary>
/// Parquet rows as JSON records ("file row N", 1-based), nested lists and structs included. A corrupt file is one
/// InvalidDataException naming it: the layout and footer are checked first (<see cref="ParquetFooter"/>), every
/// Parquet.Net exception is wrapped with the file name, and the read runs within a time budget so no file can hang it.
/// </summary>
public static class ParquetRecords
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        string name = Path.GetFileName(path);
        var rows = Load(path, name);
        int n = 0;
        foreach (var row in rows)
        {
            n++;
            yield return new RawRecord(JsonSerializer.SerializeToElement(ToNode(row), DataJson.Default.JsonNode), $"{name} row {n}");
        }
    }

    static IList<Dictionary<string, object>> Load(string path, string name)
    {
        using var stream = File.OpenRead(path);
        ParquetFooter.Check(stream, name);
        // The footer check bounds the metadata parse; the budget bounds the rest (pages) for any file: 30 s plus 1 s per
        // 4 MB, far above a healthy read. A read past it is abandoned (its stream is closed under it).
        var budget = TimeSpan.FromSeconds(30 + stream.Length / (4 << 20));
        using var cancel = new CancellationTokenSource(budget);
        var read = Task.Run(() => ParquetSerializer.DeserializeUntypedAsync(stream, cancellationToken: cancel.Token), cancel.Token);
        try
        {
            if (!read.Wait(budget + TimeSpan.FromSeconds(1)))
                throw new InvalidDataException($"{name}: reading the parquet file took longer than {budget.TotalSeconds:0} s; the file looks corrupt");
            return read.Result.Data;
        }
        catch (AggregateException e)
        {
            var inner = e.GetBaseException();
            string why = inner is OperationCanceledException ? $"reading took longer than {budget.TotalSeconds:0} s" : inner.Message;
            throw new InvalidDataException($"{name}: not a readable parquet file ({why})", inner);
        }
    }

    static JsonNode? ToNode(object? v) => v switch
    {
        null => null,
        IDictionary<string, object?> d => new JsonObject(d.Select(kv => KeyValuePair.Create(kv.Key, ToNode(kv.Value)))),
        string s => JsonValue.Create(s),
        System.Collections.IEnumerable e => new JsonArray(e.Cast<object?>().Select(ToNode).ToArray()),
        bool b => JsonValue.Create(b),
        DateTime or DateTimeOffset or TimeSpan => JsonValue.Create(Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)),
        IConvertible c when c.ToDouble(System.Globalization.CultureInfo.InvariantCulture) is var x && double.IsFinite(x) => JsonValue.Create(x),
        _ => JsonValue.Create(Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)),
    };
}
