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
            if (line.Contains("\\u", StringComparison.Ordinal) && InvalidText(value, "") is { } field)
            {
                errors.Add(new DatasetError($"{name}:{lineNo}", field, LoneSurrogate));
                continue;
            }
            yield return new RawRecord(value, $"{name}:{lineNo}");
        }
    }

    const string LoneSurrogate = "text is not valid Unicode: invalid UTF-8 bytes, or a \\uD800-\\uDFFF escape without its pair (a lone surrogate)";

    // The field holding a string (or key) with a lone surrogate escape ("\ud800" is valid JSON but not text), or null.
    // System.Text.Json only notices when the string is read, which would be a raw exception deep in the mapping.
    static string? InvalidText(JsonElement e, string path)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    string key;
                    try
                    {
                        key = p.Name;
                    }
                    catch (InvalidOperationException)
                    {
                        return path.Length == 0 ? "(a key)" : path + ".(a key)";
                    }
                    if (InvalidText(p.Value, path.Length == 0 ? key : $"{path}.{key}") is { } f) return f;
                }
                return null;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in e.EnumerateArray())
                    if (InvalidText(item, $"{path}[{i++}]") is { } f) return f;
                return null;
            case JsonValueKind.String:
                try
                {
                    e.GetString();
                    return null;
                }
                catch (InvalidOperationException)
                {
                    return path.Length == 0 ? "(record)" : path;
                }
            default: return null;
        }
    }

    public static List<RawRecord> ReadJsonArray(string path, List<DatasetError> errors)
    {
        string name = Path.GetFileName(path);
        byte[] bytes = File.ReadAllBytes(path);
        var records = new List<RawRecord>();
        int line = 1;
        long counted = 0;   // bytes scanned for newlines so far
        bool mayEscape = bytes.AsSpan().IndexOf("\\u"u8) >= 0 || !System.Text.Unicode.Utf8.IsValid(bytes);
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
                if (mayEscape && InvalidText(doc.RootElement, "") is { } field)
                    errors.Add(new DatasetError($"{name}:{line}", field, LoneSurrogate));
                else records.Add(new RawRecord(doc.RootElement.Clone(), $"{name}:{line}"));
            }
        }
        catch (JsonException e)
        {
            errors.Add(new DatasetError($"{name}:{(e.LineNumber ?? 0) + 1}", "(file)", $"malformed JSON: {e.Message}"));
        }
        return records;
    }
}
