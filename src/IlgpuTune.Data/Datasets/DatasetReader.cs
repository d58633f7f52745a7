using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuTune.Data.Datasets;

/// <summary>How files are read before the map fn: column renaming (spreadsheets) and how .txt files are cut.</summary>
public sealed record DatasetReadOptions
{
    /// <summary>
    /// Field name → column name, applied to every record before the map fn (datasets' rename_columns): e.g.
    /// {input: question, output: answer, system: persona} feeds a spreadsheet to default_map_fn.
    /// </summary>
    public IReadOnlyDictionary<string, string>? Columns { get; init; }
    public TextSampleBy SampleBy { get; init; } = TextSampleBy.Line;

    /// <summary>"input=question,output=answer" → {input: question, output: answer}.</summary>
    public static Dictionary<string, string> ParseColumns(string spec)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0 || eq == pair.Length - 1)
                throw new ArgumentException($"columns '{spec}': expected field=column pairs separated by commas, e.g. input=question,output=answer");
            map[pair[..eq].Trim()] = pair[(eq + 1)..].Trim();
        }
        return map;
    }
}

/// <summary>What a streamed read counted: records the map fn dropped, bytes of the files read so far.</summary>
public sealed class ReadCounts
{
    public int Dropped { get; set; }
    public ReadCounter Bytes { get; } = new();
}

/// <summary>
/// Reads and maps a dataset file or folder (.json / .jsonl: JSON Lines or one JSON array; .parquet; .csv / .tsv; .xlsx;
/// .txt; a Hugging Face dataset folder); all bad records are reported together, except that a file whose first record
/// is in another known format gets one line naming that format.
/// </summary>
public static class DatasetReader
{
    public const int DefaultMaxErrors = 50;

    /// <summary>Returns the conversations and the number of records XTuner's map fn drops (alpaca &lt;nooutput&gt;).</summary>
    public static (List<Conversation> Conversations, int Dropped) Read(string path, DatasetFormat format, int maxErrors = DefaultMaxErrors,
        DatasetReadOptions? options = null)
    {
        var errors = new List<DatasetError>();
        var counts = new ReadCounts();
        var outp = Stream(path, format, maxErrors, options ?? new DatasetReadOptions(), errors, counts).ToList();
        if (errors.Count > 0)
            throw new DatasetException(errors.Take(maxErrors).ToList(), errors.Count > maxErrors);
        return (outp, counts.Dropped);
    }

    /// <summary>
    /// The conversations of a file or dataset folder as they are read (one record in memory at a time); bad records go to
    /// <paramref name="errors"/> (reading stops once there are more than maxErrors), dropped records and bytes read to
    /// <paramref name="counts"/>. A first record in another known format throws at once.
    /// </summary>
    public static IEnumerable<Conversation> Stream(string path, DatasetFormat format, int maxErrors, DatasetReadOptions options,
        List<DatasetError> errors, ReadCounts counts)
    {
        foreach (string file in Directory.Exists(path) ? DatasetFiles.Folder(path) : [path])
        {
            if (!File.Exists(file)) throw new FileNotFoundException($"dataset file not found: {file}", file);
            bool first = true;
            long before = counts.Bytes.Bytes;
            foreach (var raw in Records(file, options, errors, counts.Bytes))
            {
                var r = options.Columns is { Count: > 0 } cols ? Rename(raw, cols) : raw;
                int errorsBefore = errors.Count;
                var c = DatasetMapFns.Map(r, format, errors);
                if (c is not null) yield return c;
                else if (errors.Count == errorsBefore) counts.Dropped++;
                else if (first && DatasetMapFns.Sniff(r.Value) is { } looks && looks.Format != format)
                    throw new DatasetException([WrongFormat(r, format, looks, options)]);
                first = false;
                if (errors.Count > maxErrors) break;
            }
            // Readers that do not count as they go (parquet, csv, xlsx, txt) count the file once it is read.
            counts.Bytes.Add(Math.Max(0, before + new FileInfo(file).Length - counts.Bytes.Bytes));
            if (errors.Count > maxErrors) yield break;
        }
    }

    /// <summary>The raw records of one file, by its extension (.json / .jsonl streamed, counting bytes in counter).</summary>
    public static IEnumerable<RawRecord> Records(string file, DatasetReadOptions options, List<DatasetError> errors, ReadCounter? counter = null) =>
        Path.GetExtension(file).ToLowerInvariant() switch
        {
            ".jsonl" or ".json" => StartsWithArray(file) ? JsonRecords.ReadJsonArray(file, errors, counter)
                : OneObject(file) is { } why ? throw new DatasetException([new DatasetError(Path.GetFileName(file), "(file)", why)])
                : JsonRecords.ReadJsonl(file, errors, counter),
            ".parquet" => ParquetRecords.Read(file),
            ".csv" or ".tsv" => TabularRecords.ReadCsv(file, errors),
            ".xlsx" => TabularRecords.ReadXlsx(file, errors),
            ".txt" => TextRecords.Read(file, options.SampleBy),
            var ext => throw new NotSupportedException(
                $"{file}: unsupported dataset extension '{ext}' ({string.Join(", ", DatasetFiles.Extensions)}, or a dataset folder)"),
        };

    // As datasets' json builder: a file holding one JSON array is a list of records whatever its extension; else JSON Lines.
    static bool StartsWithArray(string file)
    {
        using var s = File.OpenRead(file);
        Span<byte> buf = stackalloc byte[1];
        int skipped = 0;
        while (s.Read(buf) == 1)
        {
            byte b = buf[0];
            if (skipped < 3 && b is 0xEF or 0xBB or 0xBF) { skipped++; continue; }   // UTF-8 BOM
            if (b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') continue;
            return b == (byte)'[';
        }
        return false;
    }

    // A file that is one multi-line JSON object (not JSON Lines): one error instead of one per line.
    static string? OneObject(string file)
    {
        string? firstLine = File.ReadLines(file).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l));
        if (firstLine is null || !firstLine.TrimStart().StartsWith('{')) return null;
        try
        {
            using var _ = JsonDocument.Parse(firstLine);
            return null;   // JSON Lines
        }
        catch (JsonException)
        {
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(file), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException)
        {
            return null;   // malformed JSON Lines: reported line by line
        }
        using (doc)
        {
            var lists = doc.RootElement.ValueKind == JsonValueKind.Object
                ? doc.RootElement.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Array).Select(p => p.Name).ToList() : [];
            return "the file is one JSON object, not JSON Lines or an array of records" + (lists.Count == 1
                ? $"; its records are under '{lists[0]}': write that list alone (json.dump(data[\"{lists[0]}\"], f))" : "");
        }
    }

    static RawRecord Rename(RawRecord r, IReadOnlyDictionary<string, string> columns)
    {
        if (r.Value.ValueKind != JsonValueKind.Object) return r;
        var o = JsonNode.Parse(r.Value.GetRawText())!.AsObject();
        foreach (var (field, column) in columns)
        {
            if (field == column || !o.TryGetPropertyValue(column, out var v)) continue;
            o.Remove(column);
            o[field] = v;
        }
        return r with { Value = JsonSerializer.SerializeToElement(o, DataJson.Default.JsonObject) };
    }

    static DatasetError WrongFormat(RawRecord r, DatasetFormat format, (DatasetFormat Format, string Description) looks, DatasetReadOptions options)
    {
        string file = r.Location.Split([':', ' '])[0];
        string fix = $"set dataset_map_fn: {DatasetMapFns.MapFnName(looks.Format)}";
        if (looks.Format == DatasetFormat.Text && format != DatasetFormat.Text && options.Columns is null)
            fix += " (or map your columns with dataset_columns / --columns)";
        return new DatasetError(file, "dataset_map_fn",
            $"records look like {looks.Description} {DatasetMapFns.Shape(looks.Format)}, not what {DatasetMapFns.MapFnName(format)} reads " +
            $"{DatasetMapFns.Shape(format)}: {fix}");
    }
}
