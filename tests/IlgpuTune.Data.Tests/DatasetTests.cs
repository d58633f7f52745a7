using IlgpuTune.TestKit;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;
using System.Text.Json.Serialization;
using Parquet.Serialization;

namespace IlgpuTune.Data.Tests;

public class DatasetTests : IDisposable
{
    readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    string Dir => _temp.Path;

    string Write(string name, string text) => _temp.Write(name, text);

    [Fact]
    public void ConversationJsonlIsRead()
    {
        string p = Write("a.jsonl", """
            {"conversation": [{"system": "S", "input": "I1", "output": "O1"}, {"input": "I2", "output": "O2", "output_with_loss": false}]}

            {"conversation": [{"input": null, "output": "only"}]}
            """);
        var (convs, dropped) = DatasetReader.Read(p, DatasetFormat.Conversation);
        Assert.Equal(0, dropped);
        Assert.Equal(2, convs.Count);
        Assert.Equal(new Turn("S", "I1", "O1"), convs[0].Turns[0]);
        Assert.False(convs[0].Turns[1].OutputWithLoss);
        Assert.Equal("a.jsonl:3", convs[1].Source);
    }

    [Fact]
    public void AllBadRecordsAreReportedWithFileLineAndField()
    {
        string p = Write("bad.jsonl", """
            {"conversation": [{"input": "ok", "output": "ok"}]}
            {"conversation": [{"input": "x"}]}
            {"conversation": [{"input": 3, "output": "y"}]}
            {"conversation": []}
            {not json
            [1, 2]
            {"conversation": [{"input": "a", "output": "b", "output_with_loss": "yes"}]}
            {"messages": []}
            """);
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Conversation));
        var where = ex.Errors.Select(e => $"{e.Location} {e.Field}").ToArray();
        Assert.Equal([
            "bad.jsonl:2 conversation[0].output",
            "bad.jsonl:3 conversation[0].input",
            "bad.jsonl:4 conversation",
            "bad.jsonl:5 (record)",
            "bad.jsonl:6 (record)",
            "bad.jsonl:7 conversation[0].output_with_loss",
            "bad.jsonl:8 conversation",
        ], where);
        Assert.Contains("bad.jsonl:2: conversation[0].output: missing", ex.Message);
    }

    [Fact]
    public void ErrorsStopAtTheLimit()
    {
        string p = Write("many.jsonl", string.Join("\n", Enumerable.Repeat("""{"conversation": 1}""", 30)));
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Conversation, maxErrors: 5));
        Assert.Equal(5, ex.Errors.Count);
        Assert.Contains("more errors omitted", ex.Message);
    }

    [Fact]
    public void JsonArrayRecordsCarryTheirLine()
    {
        string p = Write("a.json", "[\n  {\"text\": \" one \"},\n\n  {\"text\": \"two\"},\n  {\"txt\": 1}\n]");
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Text));
        Assert.Equal("a.json:5", Assert.Single(ex.Errors).Location);
        string ok = Write("b.json", "[\n  {\"text\": \" one \"},\n\n  {\"text\": \"two\"}\n]");
        var (convs, _) = DatasetReader.Read(ok, DatasetFormat.Text);
        Assert.Equal(["b.json:2", "b.json:4"], convs.Select(c => c.Source));
        Assert.Equal(new Turn(null, "", "one", NeedEosToken: false), convs[0].Turns[0]);
    }

    [Fact]
    public void MalformedJsonArrayNamesTheLine()
    {
        string p = Write("m.json", "[\n {\"text\": \"a\"},\n {\"text\": }\n]");
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Text));
        Assert.Equal("m.json:3", Assert.Single(ex.Errors).Location);
    }

    [Fact]
    public void AlpacaMapsAndDropsNoOutput()
    {
        string p = Write("alpaca.jsonl", """
            {"instruction": "Add", "input": "1 and 2", "output": "3"}
            {"instruction": "Say nothing", "input": "", "output": "<nooutput>"}
            """);
        var (convs, dropped) = DatasetReader.Read(p, DatasetFormat.Alpaca);
        Assert.Equal(1, dropped);
        Assert.Equal(new Turn(null, "Add\n1 and 2", "3"), Assert.Single(convs).Turns.Single());
    }

    [Fact]
    public void Oasst1SplitsTurnsAndDropsATrailingQuestion()
    {
        string p = Write("o.jsonl", """
            {"text": "### Human: Can you explain X?### Assistant: Sure! X is Y.### Human: Why?### Assistant: Because.### Human: Bye"}
            """);
        var turns = DatasetReader.Read(p, DatasetFormat.Oasst1).Conversations.Single().Turns;
        Assert.Equal([new Turn(null, "Can you explain X?", "Sure! X is Y."), new Turn(null, "Why?", "Because.")], turns);
    }

    [Fact]
    public void ColorsUsesTheColoristSystem()
    {
        string p = Write("c.jsonl", """{"description": "Human: a calm sea: blue", "color": "#0000ff"}""");
        var t = DatasetReader.Read(p, DatasetFormat.Colors).Conversations.Single().Turns.Single();
        Assert.Equal(new Turn(XtunerTemplates.System["colorist"], "a calm sea: blue", "#0000ff"), t);
    }

    [Fact]
    public void OpenAIMessagesFollowOpenaiMapFn()
    {
        string p = Write("m.jsonl", """
            {"messages": [{"role": "assistant", "content": "dropped"}, {"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "A1", "loss": false}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "A2", "loss": "True"}]}
            {"messages": [{"role": "tool", "content": "x"}, {"role": "user"}]}
            """);
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.OpenAI));
        Assert.Equal(["m.jsonl:2 messages[0].role", "m.jsonl:2 messages[1].content"], ex.Errors.Select(e => $"{e.Location} {e.Field}"));
        File.WriteAllLines(p, File.ReadAllLines(p).Take(1));
        var turns = DatasetReader.Read(p, DatasetFormat.OpenAI).Conversations.Single().Turns;
        Assert.Equal([new Turn("S", "ab", "A1", OutputWithLoss: false), new Turn("", "c", "A2")], turns);
    }

    public sealed class ParquetTurn
    {
        [JsonPropertyName("input")] public string? Input { get; set; }
        [JsonPropertyName("output")] public string? Output { get; set; }
    }

    public sealed class ParquetRow
    {
        [JsonPropertyName("conversation")] public List<ParquetTurn>? Conversation { get; set; }
    }

    [Fact]
    public async Task ParquetConversationsAreRead()
    {
        string p = Path.Combine(Dir, "d.parquet");
        var rows = new[]
        {
            new ParquetRow { Conversation = [new ParquetTurn { Input = "i1", Output = "o1" }, new ParquetTurn { Input = "i2", Output = "o2" }] },
            new ParquetRow { Conversation = [new ParquetTurn { Input = "x", Output = null }] },
        };
        await ParquetSerializer.SerializeAsync(rows, p);
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Conversation));
        Assert.Equal("d.parquet row 2: conversation[0].output: missing", Assert.Single(ex.Errors).ToString());
        await ParquetSerializer.SerializeAsync(rows[..1], p);
        var turns = DatasetReader.Read(p, DatasetFormat.Conversation).Conversations.Single().Turns;
        Assert.Equal([new Turn(null, "i1", "o1"), new Turn(null, "i2", "o2")], turns);
    }

    [Fact]
    public void TextRecordsGetNoEos()
    {
        var tok = RealTokenizers.Get("llama2");
        var conv = new Conversation([new Turn(null, "", "hello", NeedEosToken: false)], "t");
        var s = new XtunerEncoder(tok, null, 100).Encode(conv);
        Assert.Equal(1, s.InputIds[0]);
        Assert.DoesNotContain(2, s.InputIds);
        Assert.Equal(s.InputIds[1..], s.Labels[1..]);
    }
}
