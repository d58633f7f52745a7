using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Datasets;

/// <summary>A raw dataset record and where it came from ("file:line" or "file row N").</summary>
public readonly record struct RawRecord(JsonElement Value, string Location);

/// <summary>Reads records from .jsonl (one per line) and .json (a top-level array) with their line numbers.</summary>
public static class JsonRecords
{
    public static IEnumerable<RawRecord> ReadJsonl(string path, List<DatasetError> errors)
    {
        string name = Path.GetFileName(path);
        int lineNo = 0;
        foreach (string line in File.ReadLines(path, Encoding.UTF8))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement value;
            try
            {
                using var doc = JsonDocument.Parse(line);
                value = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                errors.Add(new DatasetError($"{name}:{lineNo}", "(record)", $"malformed JSON: {e.Message}"));
                continue;
            }
            yield return new RawRecord(value, $"{name}:{lineNo}");
        }
    }

    public static List<RawRecord> ReadJsonArray(string path, List<DatasetError> errors)
    {
        string name = Path.GetFileName(path);
        byte[] bytes = File.ReadAllBytes(path);
        var records = new List<RawRecord>();
        int line = 1;
        long counted = 0;   // bytes scanned for newlines so far
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray)
            {
                errors.Add(new DatasetError($"{name}:1", "(file)", "a .json dataset must be a JSON array of records (use .jsonl for one record per line)"));
                return records;
            }
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                long start = reader.TokenStartIndex;
                line += bytes.AsSpan((int)counted, (int)(start - counted)).Count((byte)'\n');
                counted = start;
                using var doc = JsonDocument.ParseValue(ref reader);
                records.Add(new RawRecord(doc.RootElement.Clone(), $"{name}:{line}"));
            }
        }
        catch (JsonException e)
        {
            errors.Add(new DatasetError($"{name}:{(e.LineNumber ?? 0) + 1}", "(file)", $"malformed JSON: {e.Message}"));
        }
        return records;
    }
}
