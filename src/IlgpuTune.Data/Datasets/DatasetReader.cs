namespace IlgpuTune.Data.Datasets;

/// <summary>Reads and maps a dataset file (.json, .jsonl, .parquet); all bad records are reported together.</summary>
public static class DatasetReader
{
    public const int DefaultMaxErrors = 50;

    /// <summary>Returns the conversations and the number of records XTuner's map fn drops (alpaca &lt;nooutput&gt;).</summary>
    public static (List<Conversation> Conversations, int Dropped) Read(string path, DatasetFormat format, int maxErrors = DefaultMaxErrors)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"dataset file not found: {path}", path);
        var errors = new List<DatasetError>();
        IEnumerable<RawRecord> records = Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".jsonl" => JsonRecords.ReadJsonl(path, errors),
            ".json" => JsonRecords.ReadJsonArray(path, errors),
            ".parquet" => ParquetRecords.Read(path),
            var ext => throw new NotSupportedException($"{path}: unsupported dataset extension '{ext}' (.json, .jsonl, .parquet)"),
        };
        var outp = new List<Conversation>();
        int dropped = 0;
        foreach (var r in records)
        {
            int before = errors.Count;
            var c = DatasetMapFns.Map(r, format, errors);
            if (c is not null) outp.Add(c);
            else if (errors.Count == before) dropped++;
            if (errors.Count > maxErrors) break;
        }
        if (errors.Count > 0)
            throw new DatasetException(errors.Take(maxErrors).ToList(), errors.Count > maxErrors);
        return (outp, dropped);
    }
}
