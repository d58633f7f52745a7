using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsvHelper;
using CsvHelper.Configuration;
using MiniExcel = MiniExcelLibs.MiniExcel;

namespace IlgpuTune.Data.Datasets;

/// <summary>
/// Spreadsheet rows as records keyed by the header row, as pandas / datasets read them: .csv and .tsv (RFC 4180 quoting,
/// line breaks inside quoted cells) and the first sheet of an .xlsx. Every cell is text; an empty cell is null.
/// Locations are "file row N" with N the spreadsheet row (the header is row 1).
/// </summary>
public static class TabularRecords
{
    public static IEnumerable<RawRecord> ReadCsv(string path, List<DatasetError> errors)
    {
        string name = Path.GetFileName(path);
        var config = new CsvConfiguration(CultureInfo.InvariantCulture)
        {
            Delimiter = Path.GetExtension(path).Equals(".tsv", StringComparison.OrdinalIgnoreCase) ? "\t" : ",",
            DetectColumnCountChanges = false,
            MissingFieldFound = null,
        };
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        using var csv = new CsvReader(reader, config);
        if (!csv.Read() || !csv.ReadHeader() || csv.HeaderRecord is not { Length: > 0 } header)
        {
            errors.Add(new DatasetError($"{name} row 1", "(header)", "expected a header row naming the columns"));
            yield break;
        }
        if (header.GroupBy(h => h).FirstOrDefault(g => g.Count() > 1) is { } dup)
        {
            errors.Add(new DatasetError($"{name} row 1", "(header)", $"column '{dup.Key}' appears twice"));
            yield break;
        }
        int row = 1;
        while (true)
        {
            bool more;
            try
            {
                more = csv.Read();
            }
            catch (CsvHelperException e)
            {
                errors.Add(new DatasetError($"{name} row {row + 1}", "(record)", $"malformed CSV: {e.Message.Split('\n')[0]}"));
                yield break;
            }
            if (!more) yield break;
            row++;
            var cells = new List<KeyValuePair<string, JsonNode?>>();
            for (int i = 0; i < header.Length; i++)
            {
                string? cell = i < csv.Parser.Count ? csv.Parser[i] : null;
                cells.Add(KeyValuePair.Create(header[i], string.IsNullOrEmpty(cell) ? null : (JsonNode?)JsonValue.Create(cell)));
            }
            if (cells.All(c => c.Value is null)) continue;   // an empty line
            yield return new RawRecord(JsonSerializer.SerializeToElement(new JsonObject(cells), DataJson.Default.JsonObject), $"{name} row {row}");
        }
    }

    public static IEnumerable<RawRecord> ReadXlsx(string path, List<DatasetError> errors)
    {
        string name = Path.GetFileName(path);
        IEnumerable<dynamic> rows;
        try
        {
            rows = MiniExcel.Query(path, useHeaderRow: true);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or System.Xml.XmlException or InvalidOperationException)
        {
            errors.Add(new DatasetError(name, "(file)", $"not a readable .xlsx workbook: {e.Message}"));
            yield break;
        }
        int row = 1;
        using var it = rows.GetEnumerator();
        while (true)
        {
            bool more;
            try
            {
                more = it.MoveNext();
            }
            catch (Exception e) when (e is InvalidDataException or IOException or System.Xml.XmlException or InvalidOperationException)
            {
                errors.Add(row == 1 ? new DatasetError(name, "(file)", $"not a readable .xlsx workbook: {e.Message}")
                    : new DatasetError($"{name} row {row + 1}", "(record)", $"unreadable row: {e.Message}"));
                yield break;
            }
            if (!more) yield break;
            row++;
            var cells = ((IDictionary<string, object?>)(object)it.Current)
                .Select(kv => KeyValuePair.Create(kv.Key, Cell(kv.Value))).ToList();
            if (cells.All(c => c.Value is null)) continue;
            yield return new RawRecord(JsonSerializer.SerializeToElement(new JsonObject(cells), DataJson.Default.JsonObject), $"{name} row {row}");
        }
    }

    // A cell as text: numbers in invariant culture ("3", "0.5"), dates as ISO 8601, empty as null.
    static JsonNode? Cell(object? v) => v switch
    {
        null => null,
        string s when s.Length == 0 => null,
        string s => JsonValue.Create(s),
        DateTime d => JsonValue.Create(d.ToString("s", CultureInfo.InvariantCulture)),
        bool b => JsonValue.Create(b ? "True" : "False"),
        IFormattable f => JsonValue.Create(f.ToString(null, CultureInfo.InvariantCulture)),
        _ => JsonValue.Create(v.ToString()),
    };
}
