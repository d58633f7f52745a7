using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Datasets;

/// <summary>How a .txt file is cut into samples (datasets' "text" builder: sample_by).</summary>
public enum TextSampleBy
{
    /// <summary>Each non-blank line is a sample (datasets' default).</summary>
    Line,
    /// <summary>Blank lines separate samples; a sample's lines keep their line breaks.</summary>
    Paragraph,
    /// <summary>The whole file is one sample.</summary>
    Document,
}

/// <summary>A .txt file as {"text": ...} records ("file:line" of each sample's first line).</summary>
public static class TextRecords
{
    public static TextSampleBy ParseSampleBy(string s) => s.Trim().ToLowerInvariant() switch
    {
        "line" => TextSampleBy.Line,
        "paragraph" => TextSampleBy.Paragraph,
        "document" => TextSampleBy.Document,
        _ => throw new ArgumentException($"unknown text sample_by '{s}' (line, paragraph, document)"),
    };

    public static IEnumerable<RawRecord> Read(string path, TextSampleBy by)
    {
        string name = Path.GetFileName(path);
        if (by == TextSampleBy.Document)
        {
            yield return Record(File.ReadAllText(path, Encoding.UTF8), $"{name}:1");
            yield break;
        }
        var paragraph = new StringBuilder();
        int lineNo = 0, start = 0;
        foreach (string line in File.ReadLines(path, Encoding.UTF8))
        {
            lineNo++;
            bool blank = string.IsNullOrWhiteSpace(line);
            if (by == TextSampleBy.Line)
            {
                if (!blank) yield return Record(line, $"{name}:{lineNo}");
                continue;
            }
            if (blank)
            {
                if (paragraph.Length > 0) yield return Record(paragraph.ToString(), $"{name}:{start}");
                paragraph.Clear();
                continue;
            }
            if (paragraph.Length == 0) start = lineNo;
            else paragraph.Append('\n');
            paragraph.Append(line);
        }
        if (paragraph.Length > 0) yield return Record(paragraph.ToString(), $"{name}:{start}");
    }

    static RawRecord Record(string text, string location) =>
        new(JsonSerializer.SerializeToElement(new Dictionary<string, string> { ["text"] = text }, DataJson.Default.DictionaryStringString), location);
}
