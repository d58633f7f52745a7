using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Datasets;

/// <summary>A raw dataset record and where it came from ("file:line" or "file row N").</summary>
public readonly record struct RawRecord(JsonElement Value, string Location);

/// <summary>
/// Bytes of the dataset files read so far (for the progress line); readers add as they go, so a reader on another thread
/// can be watched.
/// </summary>
public sealed class ReadCounter
{
    long _bytes;
    public long Bytes => Volatile.Read(ref _bytes);
    public void Add(long n) => Interlocked.Add(ref _bytes, n);
}

/// <summary>
/// Reads records from .jsonl (one per line) and .json (a top-level array) with their line numbers, streamed: a window of
/// the file's bytes is held, never the whole file.
/// </summary>
public static class JsonRecords
{
    const int Window = 1 << 20;

    public static IEnumerable<RawRecord> ReadJsonl(string path, List<DatasetError> errors, ReadCounter? counter = null) =>
        ReadJsonl(path, errors, counter, Window);

    // window: the initial window in bytes (tests use a few bytes to cross window edges).
    internal static IEnumerable<RawRecord> ReadJsonl(string path, List<DatasetError> errors, ReadCounter? counter, int window)
    {
        string name = Path.GetFileName(path);
        using var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buf = new byte[window];
        int start = 0, end = 0, lineNo = 0;
        bool eof = false, first = true;
        while (true)
        {
            int nl = buf.AsSpan(start, end - start).IndexOf((byte)'\n');
            if (nl < 0 && !eof)
            {
                // Keep the partial line, read more (a line longer than the window grows it).
                if (start > 0)
                {
                    buf.AsSpan(start, end - start).CopyTo(buf);
                    (end, start) = (end - start, 0);
                }
                if (end == buf.Length) Array.Resize(ref buf, buf.Length * 2);
                int n = s.Read(buf, end, buf.Length - end);
                if (n == 0) eof = true;
                end += n;
                continue;
            }
            if (nl < 0 && start == end) yield break;
            int len = nl < 0 ? end - start : nl;
            var line = new ReadOnlyMemory<byte>(buf, start, len);
            start += nl < 0 ? len : len + 1;
            counter?.Add(nl < 0 ? len : len + 1);
            lineNo++;
            if (first)
            {
                first = false;
                if (line.Span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) line = line[3..];   // UTF-8 BOM
            }
            if (Blank(line.Span)) continue;
            if (ParseOne(line, $"{name}:{lineNo}", errors, default) is { } r) yield return r;
        }
    }

    // A line File.ReadLines + string.IsNullOrWhiteSpace would skip (spaces, \r, or Unicode white space only).
    static bool Blank(ReadOnlySpan<byte> line)
    {
        int i = line.IndexOfAnyExcept(" \t\r\f\v"u8);
        return i < 0 || line[i] >= 0x80 && string.IsNullOrWhiteSpace(System.Text.Encoding.UTF8.GetString(line));
    }

    // One record's bytes parsed and copied out (the window is reused), or null with its error added.
    static RawRecord? ParseOne(ReadOnlyMemory<byte> bytes, string location, List<DatasetError> errors, JsonDocumentOptions options)
    {
        JsonElement value;
        try
        {
            using var doc = JsonDocument.Parse(bytes, options);
            value = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            errors.Add(new DatasetError(location, "(record)", $"malformed JSON: {e.Message}"));
            return null;
        }
        if ((bytes.Span.IndexOf("\\u"u8) >= 0 || !System.Text.Unicode.Utf8.IsValid(bytes.Span)) && InvalidText(value, "") is { } field)
        {
            errors.Add(new DatasetError(location, field, LoneSurrogate));
            return null;
        }
        return new RawRecord(value, location);
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

    /// <summary>
    /// The records of a file holding one JSON array (comments allowed), each with the line it starts on; a syntax error
    /// ends the file with one error naming its line.
    /// </summary>
    public static IEnumerable<RawRecord> ReadJsonArray(string path, List<DatasetError> errors, ReadCounter? counter = null) =>
        ReadJsonArray(path, errors, counter, Window);

    internal static IEnumerable<RawRecord> ReadJsonArray(string path, List<DatasetError> errors, ReadCounter? counter, int window)
    {
        using var a = new ArrayReader(path, errors, counter, window);
        while (a.Next() is { } r)
            if (r.Value.ValueKind != JsonValueKind.Undefined) yield return r;
    }

    // Utf8JsonReader over a sliding window of the file: each element is skipped whole (TrySkip) before it is parsed, and
    // the window grows when one element does not fit.
    sealed class ArrayReader(string path, List<DatasetError> errors, ReadCounter? counter, int window) : IDisposable
    {
        static readonly JsonReaderOptions s_reader = new() { CommentHandling = JsonCommentHandling.Skip };
        static readonly JsonDocumentOptions s_doc = new() { CommentHandling = JsonCommentHandling.Skip };
        readonly string _name = Path.GetFileName(path);
        readonly FileStream _s = new(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        byte[] _buf = new byte[window];
        int _start, _end, _counted;   // window [_start, _end); newlines counted up to _counted
        int _line = 1;
        bool _eof, _begun, _done;
        JsonReaderState _state = new(s_reader);

        /// <summary>The next record (Value Undefined: a record with an error, skipped), or null at the end.</summary>
        public RawRecord? Next()
        {
            while (!_done)
            {
                if (_start == _end && !_eof || !TryElement(out var r))
                {
                    if (_eof) return Fail(null);
                    Fill();
                    continue;
                }
                if (r is not null) return r;
            }
            return null;
        }

        // false: the window ends inside the next token or element; true with r null: the array began or ended.
        bool TryElement(out RawRecord? r)
        {
            r = null;
            var reader = new Utf8JsonReader(_buf.AsSpan(_start, _end - _start), _eof, _state);
            try
            {
                if (!reader.Read()) return false;
                if (!_begun)
                {
                    if (reader.TokenType != JsonTokenType.StartArray)
                    {
                        errors.Add(new DatasetError($"{_name}:1", "(file)", "a .json dataset must be a JSON array of records (use .jsonl for one record per line)"));
                        _done = true;
                        return true;
                    }
                    _begun = true;
                    Consume(ref reader);
                    return true;
                }
                if (reader.TokenType == JsonTokenType.EndArray)
                {
                    _done = true;
                    return true;
                }
                int at = _start + (int)reader.TokenStartIndex;
                if (!reader.TrySkip()) return false;
                _line += _buf.AsSpan(_counted, at - _counted).Count((byte)'\n');
                _counted = at;
                var bytes = new ReadOnlyMemory<byte>(_buf, at, _start + (int)reader.BytesConsumed - at);
                Consume(ref reader);
                r = ParseOne(bytes, $"{_name}:{_line}", errors, s_doc) ?? new RawRecord(default, "");
                return true;
            }
            catch (JsonException e)
            {
                Fail(e);
                return true;
            }
        }

        void Consume(ref Utf8JsonReader reader)
        {
            _state = reader.CurrentState;
            int n = (int)reader.BytesConsumed;
            _start += n;
            counter?.Add(n);
        }

        RawRecord? Fail(JsonException? e)
        {
            // The reader's state carries line numbers across windows, so e's line is the file's.
            errors.Add(new DatasetError($"{_name}:{(e?.LineNumber ?? _line - 1) + 1}", "(file)",
                $"malformed JSON: {e?.Message ?? "the array is not closed (the file ends inside it)"}"));
            _done = true;
            return null;
        }

        void Fill()
        {
            if (_start > 0)
            {
                _line += _buf.AsSpan(_counted, _start - _counted).Count((byte)'\n');
                _buf.AsSpan(_start, _end - _start).CopyTo(_buf);
                (_end, _start, _counted) = (_end - _start, 0, 0);
            }
            if (_end == _buf.Length) Array.Resize(ref _buf, _buf.Length * 2);
            int n = _s.Read(_buf, _end, _buf.Length - _end);
            if (n == 0) _eof = true;
            _end += n;
        }

        public void Dispose() => _s.Dispose();
    }
}
