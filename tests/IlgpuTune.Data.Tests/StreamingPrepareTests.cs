using System.Text;
using System.Text.Json;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.TestKit;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// The streamed dataset path (JSON / JSONL read through a small window, records encoded on several threads while the file
/// is read) against the whole-file path it replaced: same records and line numbers, same samples in the same order, same
/// errors, same packed rows.
/// </summary>
public class StreamingPrepareTests : IDisposable
{
    readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    // 150 records (more than two encode batches of 64), English and Chinese, 1-3 turns, some without loss.
    static List<JsonElement> Records()
    {
        var fixture = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Path("xtuner-conversations.json"))).RootElement.EnumerateArray().ToList();
        var rng = new Random(7);
        var outp = new List<JsonElement>();
        for (int i = 0; i < 150; i++)
        {
            var turns = Enumerable.Range(0, rng.Next(1, 4)).Select(t => new Dictionary<string, object>
            {
                ["input"] = $"Question {i}.{t}: " + string.Concat(Enumerable.Repeat(i % 2 == 0 ? "how does this work? " : "这是怎么工作的？", rng.Next(1, 6))),
                ["output"] = $"Answer {i}.{t}: " + string.Concat(Enumerable.Repeat(i % 2 == 0 ? "it works well. " : "它运行得很好。", rng.Next(1, 40))),
            }).ToList();
            outp.Add(i % 10 == 3 ? fixture[i % fixture.Count] : JsonSerializer.SerializeToElement(new Dictionary<string, object> { ["conversation"] = turns }));
        }
        return outp;
    }

    // JSON Lines with what real files have: a BOM, CRLF endings, blank lines.
    string WriteJsonl(IEnumerable<JsonElement> records, string name = "d.jsonl")
    {
        var sb = new StringBuilder("\uFEFF");
        int i = 0;
        foreach (var r in records)
        {
            sb.Append(JsonSerializer.Serialize(r)).Append(i % 7 == 0 ? "\r\n" : "\n");
            if (i++ % 11 == 5) sb.Append("  \n");
        }
        return _temp.Write(name, sb.ToString());
    }

    // One indented array with comments between records.
    string WriteJsonArray(IEnumerable<JsonElement> records, string name = "d.json")
    {
        var sb = new StringBuilder("[\n");
        int i = 0;
        foreach (var r in records)
        {
            if (i > 0) sb.Append(",\n");
            if (i % 9 == 4) sb.Append("  // a comment\n");
            sb.Append(JsonSerializer.Serialize(r, new JsonSerializerOptions { WriteIndented = true }));
            i++;
        }
        return _temp.Write(name, sb.Append("\n]\n").ToString());
    }

    // The records and lines as the whole-file readers found them: File.ReadLines for JSON Lines, a JsonDocument of the
    // whole array with newlines counted to each element.
    static List<(string Json, string Location)> Reference(string path)
    {
        string name = Path.GetFileName(path);
        var outp = new List<(string, string)>();
        if (path.EndsWith(".jsonl"))
        {
            int line = 0;
            foreach (string l in File.ReadLines(path))
            {
                line++;
                if (!string.IsNullOrWhiteSpace(l)) outp.Add((JsonDocument.Parse(l).RootElement.GetRawText(), $"{name}:{line}"));
            }
            return outp;
        }
        byte[] bytes = File.ReadAllBytes(path);
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        reader.Read();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            int at = (int)reader.TokenStartIndex;
            using var doc = JsonDocument.ParseValue(ref reader);
            outp.Add((doc.RootElement.GetRawText(), $"{name}:{1 + bytes.AsSpan(0, at).Count((byte)'\n')}"));
        }
        return outp;
    }

    [Theory]
    [InlineData(".jsonl", 16)]
    [InlineData(".jsonl", 1 << 20)]
    [InlineData(".json", 16)]
    [InlineData(".json", 1 << 20)]
    public void StreamedRecordsAndLinesEqualTheWholeFileRead(string ext, int window)
    {
        var records = Records();
        string p = ext == ".jsonl" ? WriteJsonl(records) : WriteJsonArray(records);
        var errors = new List<DatasetError>();
        var counter = new ReadCounter();
        var streamed = (ext == ".jsonl" ? JsonRecords.ReadJsonl(p, errors, counter, window) : JsonRecords.ReadJsonArray(p, errors, counter, window))
            .Select(r => (r.Value.GetRawText(), r.Location)).ToList();
        Assert.Empty(errors);
        Assert.Equal(Reference(p), streamed);
        Assert.Equal(records.Count, streamed.Count);
        // Every byte is counted once (the array's closing bracket and newline follow the last record).
        Assert.InRange(counter.Bytes, new FileInfo(p).Length - 3, new FileInfo(p).Length);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(1 << 20)]
    public void AnArraySyntaxErrorNamesTheFilesLine(int window)
    {
        var records = Records();
        string good = WriteJsonArray(records.Take(40));
        string text = File.ReadAllText(good);
        int cut = text.LastIndexOf("\"output\"", StringComparison.Ordinal);
        string bad = _temp.Write("bad.json", text[..cut] + "\"output\" \"x\"" + text[(cut + 8)..]);
        int line = 1 + text[..cut].Count(c => c == '\n');
        var errors = new List<DatasetError>();
        var read = JsonRecords.ReadJsonArray(bad, errors, null, window).ToList();
        Assert.Equal(39, read.Count);
        var e = Assert.Single(errors);
        Assert.Equal($"bad.json:{line}", e.Location);
        Assert.StartsWith("malformed JSON", e.Message);

        string open = _temp.Write("open.json", text.TrimEnd()[..^1]);   // no closing bracket
        errors.Clear();
        Assert.Equal(40, JsonRecords.ReadJsonArray(open, errors, null, window).Count());
        Assert.Contains("malformed JSON", Assert.Single(errors).Message);
    }

    static DataOptions Options(string file, bool pack = true) => new()
    {
        DataFiles = [file], Format = "conversation", TokenizerDir = RealTokenizers.Dir("qwen3"), Template = "qwen_chat", MaxLength = 96,
        Pack = pack, Seed = 5,
    };

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ReadAndEncodeEqualsReadThenEncodeAll(int threads)
    {
        string p = WriteJsonl(Records());
        var o = Options(p);
        var encoder = DataPipeline.CreateEncoder(o, RealTokenizers.Get("qwen3"));
        var (conversations, dropped) = DataPipeline.Read(o);
        var before = DataPipeline.EncodeAll(conversations, encoder);
        var now = DataPipeline.ReadAndEncode(o, encoder, keepConversations: true, maxDegreeOfParallelism: threads);
        Assert.Equal(dropped, now.Dropped);
        Assert.Equal(conversations.Select(c => c.Source), now.Conversations!.Select(c => c.Source));
        Assert.Equal(before.Length, now.Samples.Length);
        for (int i = 0; i < before.Length; i++)
        {
            Assert.Equal(before[i].InputIds, now.Samples[i].InputIds);
            Assert.Equal(before[i].Labels, now.Samples[i].Labels);
            Assert.Equal(before[i].Truncated, now.Samples[i].Truncated);
        }
        Assert.Null(DataPipeline.ReadAndEncode(o, encoder).Conversations);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PreparedRowsEqualThePackedRowsOfTheWholeFilePath(bool pack)
    {
        string p = WriteJsonArray(Records());
        var o = Options(p, pack);
        var tok = RealTokenizers.Get("qwen3");
        var (conversations, _) = DataPipeline.Read(o);
        var (rows, stats) = DataPipeline.Pack(DataPipeline.EncodeAll(conversations, DataPipeline.CreateEncoder(o, tok)), o);
        using var cache = DataPipeline.Prepare(o, tok, _temp.File("cache"));
        Assert.Equal(stats, cache.Stats);
        for (int r = 0; r < rows.Count; r++)
        {
            var got = cache.GetRow(r);
            Assert.Equal(rows[r].InputIds, got.InputIds);
            Assert.Equal(rows[r].Labels, got.Labels);
            Assert.Equal(rows[r].CumulativeLengths, got.CumulativeLengths);
            Assert.Equal(rows[r].PositionIds, got.PositionIds);
            Assert.Equal(rows[r].SampleIndices, got.SampleIndices);
        }
    }

    [Fact]
    public void ReadErrorsOfEveryFileComeBeforeEncodeErrorsAsBefore()
    {
        var records = Records();
        var lines = records.Select(r => JsonSerializer.Serialize(r)).ToList();
        lines[70] = "{\"conversation\": [{\"input\": 1, \"output\": \"x\"}]}";
        lines[130] = "{not json";
        string a = _temp.Write("a.jsonl", string.Join("\n", lines));
        string b = _temp.Write("b.jsonl", "{\"conversation\": []}\n");
        var o = Options(a) with { DataFiles = [a, b] };
        var old = Assert.Throws<DatasetException>(() => DataPipeline.Read(o));
        var now = Assert.Throws<DatasetException>(() =>
            DataPipeline.ReadAndEncode(o, DataPipeline.CreateEncoder(o, RealTokenizers.Get("qwen3")), maxDegreeOfParallelism: 2));
        Assert.Equal(old.Message, now.Message);
        Assert.Equal(["a.jsonl:71", "a.jsonl:131", "b.jsonl:1"], now.Errors.Select(e => e.Location));

        // A file in another format is one line, whichever path reads it.
        string c = _temp.Write("c.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
        var wrong = o with { DataFiles = [c] };
        var one = Assert.Single(Assert.Throws<DatasetException>(() =>
            DataPipeline.ReadAndEncode(wrong, DataPipeline.CreateEncoder(o, RealTokenizers.Get("qwen3")))).Errors);
        Assert.Equal("dataset_map_fn", one.Field);
        Assert.Equal(one, Assert.Single(Assert.Throws<DatasetException>(() => DatasetReader.Read(c, DatasetFormat.Conversation)).Errors));
    }

    [Fact]
    public void AnEncoderFailureStopsTheReaderAndIsRethrown()
    {
        string p = WriteJsonl(Records());
        var o = Options(p);
        var e = Assert.Throws<InvalidOperationException>(() => DataPipeline.ReadAndEncode(o, new Failing(), maxDegreeOfParallelism: 2));
        Assert.Equal("boom", e.Message);
    }

    // Fails on its 100th sample (a bug, not a bad record).
    sealed class Failing : ISampleEncoder
    {
        int _calls;
        public EncodedSample Encode(Conversation c) => Interlocked.Increment(ref _calls) == 100 ? throw new InvalidOperationException("boom") : new([1], [1], false);
    }

    [Fact]
    public void RememberedFileHashesGiveTheSameKeyUntilTheFileChanges()
    {
        string data = WriteJsonl(Records()), tok = Path.Combine(RealTokenizers.Dir("qwen3"), "tokenizer.json"), memo = _temp.File("memo");
        string Key(string? m) => PackedCache.Key([data], [tok], "qwen_chat", "conversation", 2048, true, 0, memoDir: m);
        string plain = Key(null);
        Assert.Equal(plain, Key(memo));
        Assert.Equal(2, Directory.GetFiles(Path.Combine(memo, "file-hashes")).Length);
        Assert.Equal(plain, Key(memo));   // from the memo
        string[] lines = File.ReadAllLines(data);
        lines[3] = lines[3].Replace("Answer", "Answex");   // same size, new content and time
        File.WriteAllLines(data, lines);
        File.SetLastWriteTimeUtc(data, DateTime.UtcNow.AddMinutes(1));
        Assert.NotEqual(plain, Key(memo));
        Assert.Equal(Key(null), Key(memo));
    }

    [Fact]
    public void TheProgressLineSaysSamplesRateShareAndEta()
    {
        var log = new StringWriter();
        var bytes = new ReadCounter();
        using (var p = new PrepareProgress(log, inPlace: false, TimeSpan.FromHours(1)))
        {
            p.Reading(bytes, 4_000_000);
            bytes.Add(1_000_000);
            p.AddSamples(1234);
            Assert.Matches(@"^dataset: 1,234 samples encoded, [\d,]+ samples/s, 25\.0% of 4 MB read, ETA \d+:\d\d$", p.Line());
            p.Tick();
            p.Phase("packing");
            Assert.Matches(@"^dataset: 1,234 samples encoded, [\d,]+ samples/s, packing \(\d+:\d\d elapsed\)$", p.Line());
        }
        var written = log.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, written.Length);
        Assert.StartsWith("dataset: 1,234 samples encoded", written[0]);
        Assert.StartsWith("dataset: 1,234 samples prepared in ", written[1]);

        var tty = new StringWriter();
        using (var p = new PrepareProgress(tty, inPlace: true, TimeSpan.FromHours(1)))
        {
            p.Tick();
            p.Tick();
        }
        Assert.Equal(3, tty.ToString().Count(c => c == '\r'));   // redrawn in place, then the final line
        Assert.Single(tty.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));

        var quick = new StringWriter();
        using (new PrepareProgress(quick, inPlace: true)) { }   // done within the first second: nothing
        Assert.Equal("", quick.ToString());
    }
}
