using IlgpuTune.TestKit;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using MiniExcelLibs;

namespace IlgpuTune.Data.Tests;

/// <summary>Dataset files as users make them (json.dump(list) in a .jsonl, .txt, spreadsheets, HF folders) and map-fn parity.</summary>
public class DatasetFormatsTests : IDisposable
{
    readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    string Dir => _temp.Path;

    string Write(string name, string text) => _temp.Write(name, text);

    static string TinyDir => Path.Combine(RealTokenizers.RepoRoot, "src", "IlgpuTune.Training", "Assets", "tiny");

    [Fact]
    public void JsonlHoldingOneJsonArrayIsReadAsHfDatasetsDoes()
    {
        // What json.dump(list, f, indent=2) writes into career_coach.jsonl.
        string p = Write("career_coach.jsonl", """
            [
              {"conversation": [{"input": "How do I ask for a raise?", "output": "Prepare numbers."}]},
              {"conversation": [{"input": "Should I switch jobs?", "output": "Weigh growth."}]}
            ]
            """);
        var (convs, _) = DatasetReader.Read(p, DatasetFormat.Conversation);
        Assert.Equal(["career_coach.jsonl:2", "career_coach.jsonl:3"], convs.Select(c => c.Source));
        Assert.Equal("Weigh growth.", convs[1].Turns[0].Output);
        // And a .json file with one record per line is JSON Lines, as datasets reads it.
        string lines = Write("lines.json", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
        Assert.Equal(2, DatasetReader.Read(lines, DatasetFormat.Text).Conversations.Count);
    }

    [Fact]
    public void TxtIsOneSamplePerLineOrParagraphOrDocument()
    {
        string p = Write("corpus.txt", "first line\nsecond line\n\n  \nthird\nparagraph\n");
        var byLine = DatasetReader.Read(p, DatasetFormat.Text).Conversations;
        Assert.Equal(["first line", "second line", "third", "paragraph"], byLine.Select(c => c.Turns[0].Output));
        Assert.Equal("corpus.txt:5", byLine[2].Source);
        var byParagraph = DatasetReader.Read(p, DatasetFormat.Text, options: new() { SampleBy = TextSampleBy.Paragraph }).Conversations;
        Assert.Equal(["first line\nsecond line", "third\nparagraph"], byParagraph.Select(c => c.Turns[0].Output));
        Assert.Equal(["corpus.txt:1", "corpus.txt:5"], byParagraph.Select(c => c.Source));
        var whole = DatasetReader.Read(p, DatasetFormat.Text, options: new() { SampleBy = TextSampleBy.Document }).Conversations;
        Assert.Equal("first line\nsecond line\n\n  \nthird\nparagraph", Assert.Single(whole).Turns[0].Output);
        Assert.False(whole[0].Turns[0].NeedEosToken);
    }

    [Fact]
    public void CsvColumnsMapToTheConversationFields()
    {
        // pandas' to_csv: quoted cells with commas, quotes and line breaks; an empty cell.
        string p = Write("coach.csv", "question,answer,persona\n" +
            "\"Hi, who are you?\",\"I am \"\"Coach\"\".\nAsk me anything.\",You are a coach.\n" +
            "Second,Two,\n");
        var columns = DatasetReadOptions.ParseColumns("input=question, output=answer, system=persona");
        var convs = DatasetReader.Read(p, DatasetFormat.Default, options: new() { Columns = columns }).Conversations;
        Assert.Equal(new Turn("You are a coach.", "Hi, who are you?", "I am \"Coach\".\nAsk me anything."), convs[0].Turns.Single());
        Assert.Equal(new Turn(null, "Second", "Two"), convs[1].Turns.Single());
        Assert.Equal(["coach.csv row 2", "coach.csv row 3"], convs.Select(c => c.Source));
        // Alpaca columns need no mapping; a .tsv is tab-separated.
        string tsv = Write("a.tsv", "instruction\tinput\toutput\nAdd\t1 and 2\t3\n");
        Assert.Equal(new Turn(null, "Add\n1 and 2", "3"), DatasetReader.Read(tsv, DatasetFormat.Alpaca).Conversations.Single().Turns.Single());
    }

    [Fact]
    public void XlsxFirstSheetRowsAreRecords()
    {
        string p = Path.Combine(Dir, "sheet.xlsx");
        MiniExcel.SaveAs(p, new[]
        {
            new Dictionary<string, object?> { ["instruction"] = "Add", ["input"] = "1 and 2", ["output"] = 3 },
            new Dictionary<string, object?> { ["instruction"] = "Greet", ["input"] = null, ["output"] = "Hello,\nworld" },
        });
        var convs = DatasetReader.Read(p, DatasetFormat.Alpaca).Conversations;
        Assert.Equal([new Turn(null, "Add\n1 and 2", "3"), new Turn(null, "Greet\n", "Hello,\nworld")], convs.Select(c => c.Turns.Single()));
        Assert.Equal("sheet.xlsx row 3", convs[1].Source);
        string notXlsx = Write("broken.xlsx", "not a zip");
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(notXlsx, DatasetFormat.Alpaca));
        Assert.Equal("broken.xlsx", Assert.Single(ex.Errors).Location);
    }

    [Fact]
    public void HfDatasetFolderReadsItsTrainSplit()
    {
        Write("ds/dataset_infos.json", "{}");
        Write("ds/README.md", "# a dataset");
        Write("ds/data/train-00000-of-00002.jsonl", "{\"text\": \"a\"}\n");
        Write("ds/data/train-00001-of-00002.jsonl", "{\"text\": \"b\"}\n");
        Write("ds/data/test-00000-of-00001.jsonl", "{\"text\": \"held out\"}\n");
        string dir = Path.Combine(Dir, "ds");
        Assert.Equal(["a", "b"], DatasetReader.Read(dir, DatasetFormat.Text).Conversations.Select(c => c.Turns[0].Output));
        Assert.Equal(2, DatasetFiles.Expand([dir]).Count);
        // No split names: every data file.
        Write("plain/dataset_info.json", "{}");
        Write("plain/part.csv", "text\nx\n");
        Assert.Single(DatasetReader.Read(Path.Combine(Dir, "plain"), DatasetFormat.Text).Conversations);
        // save_to_disk (Arrow) is named, not misread.
        Write("saved/state.json", "{}");
        Write("saved/data-00000-of-00001.arrow", "");
        var e = Assert.Throws<NotSupportedException>(() => DatasetReader.Read(Path.Combine(Dir, "saved"), DatasetFormat.Text));
        Assert.Contains("save_to_disk", e.Message);
    }

    [Theory]
    [InlineData(DatasetFormat.Colors, """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}""", "openai messages", "openai_map_fn")]
    [InlineData(DatasetFormat.Conversation, """{"instruction": "a", "input": "", "output": "b"}""", "alpaca records", "alpaca_map_fn")]
    [InlineData(DatasetFormat.Alpaca, """{"conversation": [{"input": "a", "output": "b"}]}""", "XTuner conversations", "None")]
    [InlineData(DatasetFormat.OpenAI, """{"text": "### Human: a### Assistant: b"}""", "oasst1 dialogues", "oasst1_map_fn")]
    [InlineData(DatasetFormat.Alpaca, """{"question": "q", "answer": "a"}""", "question/answer records", "law_reference_map_fn")]
    public void RecordsOfAnotherFormatGetOneLineNamingIt(DatasetFormat chosen, string record, string looks, string mapFn)
    {
        string p = Write("wrong.jsonl", string.Join("\n", Enumerable.Repeat(record, 80)));
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, chosen));
        var e = Assert.Single(ex.Errors);
        Assert.Contains($"records look like {looks}", e.Message);
        Assert.EndsWith($"set dataset_map_fn: {mapFn}", e.Message.Split(" (or map")[0]);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void AFileThatStartsRightStillListsEachBadRecord()
    {
        string p = Write("mixed.jsonl", """
            {"description": "Red: red", "color": "#ff0000"}
            {"messages": []}
            {"description": "Blue: blue"}
            """);
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Colors));
        Assert.Equal(["mixed.jsonl:2 description", "mixed.jsonl:2 color", "mixed.jsonl:3 color"], ex.Errors.Select(e => $"{e.Location} {e.Field}"));
    }

    // Each map fn against xtuner/dataset/map_fns/dataset_map_fns/*.py: the fields it reads and the system it adds.
    public static TheoryData<DatasetFormat, string, Turn> MapFnCases => new()
    {
        // alpaca_map_fn sets no system since XTuner v0.1.12 ("Remove system for alpaca_map_fn", #363).
        { DatasetFormat.Alpaca, """{"instruction": "Add", "input": "1 2", "output": "3"}""", new Turn(null, "Add\n1 2", "3") },
        { DatasetFormat.AlpacaZh, """{"instruction_zh": "加", "input_zh": "1 2", "output_zh": "3"}""", new Turn(null, "加\n1 2", "3") },
        { DatasetFormat.Arxiv, """{"abstract": "We ...", "title": "T"}""", new Turn(XtunerTemplates.System["arxiv_gentile"], "We ...", "T") },
        { DatasetFormat.CodeAlpaca, """{"prompt": "p", "completion": "c"}""", new Turn(XtunerTemplates.System["coder"], "p", "c") },
        { DatasetFormat.TinyCodes, """{"prompt": "p", "response": "r"}""", new Turn(XtunerTemplates.System["coder"], "p", "r") },
        { DatasetFormat.CrimeKgAssitant, """{"input": "i", "output": "o"}""", new Turn(XtunerTemplates.System["lawyer"], "i", "o") },
        { DatasetFormat.LawReference, """{"question": "q", "answer": "a"}""", new Turn(XtunerTemplates.System["lawyer"], "q", "a") },
        { DatasetFormat.Medical, """{"instruction": "i", "input": "x", "output": "o"}""", new Turn(XtunerTemplates.System["medical"], "i\nx", "o") },
        { DatasetFormat.Sql, """{"context": "CREATE TABLE t", "question": "q", "answer": "SELECT 1"}""", new Turn(XtunerTemplates.System["sql"], "CREATE TABLE t\nq", "SELECT 1") },
        { DatasetFormat.OpenOrca, """{"system_prompt": "S", "question": "q", "response": "r"}""", new Turn("S", "q", "r") },
        { DatasetFormat.StackExchange, """{"question": "q", "response": "r"}""", new Turn(null, "q", "r") },
        { DatasetFormat.Default, """{"input": "i", "output": "o"}""", new Turn(null, "i", "o") },
        // colors_map_fn: ':'.join(description.split(':')[1:]).strip(); no ':' leaves an empty input.
        { DatasetFormat.Colors, """{"description": "Sky Blue: a light blue: airy", "color": "#87ceeb"}""", new Turn(XtunerTemplates.System["colorist"], "a light blue: airy", "#87ceeb") },
        { DatasetFormat.Colors, """{"description": "a light blue", "color": "#87ceeb"}""", new Turn(XtunerTemplates.System["colorist"], "", "#87ceeb") },
    };

    [Theory]
    [MemberData(nameof(MapFnCases))]
    public void MapFnsMatchXtuner(DatasetFormat format, string record, Turn expected)
    {
        string p = Write("r.jsonl", record);
        Assert.Equal(expected, DatasetReader.Read(p, format).Conversations.Single().Turns.Single());
        Assert.Equal(expected.System is { } s && format != DatasetFormat.OpenOrca ? s : null, DatasetMapFns.System(format));
    }

    [Fact]
    public void WizardLMSkipsLeadingGptAndJoinsHumanTurns()
    {
        string p = Write("w.jsonl", """{"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "a"}, {"from": "human", "value": "b"}, {"from": "gpt", "value": "A"}, {"from": "human", "value": "c"}]}""");
        Assert.Equal(new Turn(null, "ab", "A"), DatasetReader.Read(p, DatasetFormat.WizardLM).Conversations.Single().Turns.Single());
    }

    [Theory]
    [InlineData("openai_map_fn", DatasetFormat.OpenAI)]
    [InlineData("None", DatasetFormat.Conversation)]
    [InlineData("pretrain_map_fn", DatasetFormat.Text)]
    [InlineData("crime_kg_assitant_map_fn", DatasetFormat.CrimeKgAssitant)]
    [InlineData("sql", DatasetFormat.Sql)]
    public void XtunerMapFnNamesParse(string name, DatasetFormat expected)
    {
        Assert.Equal(expected, DatasetMapFns.Parse(name));
        Assert.Equal(expected, DatasetMapFns.Parse(DatasetMapFns.MapFnName(expected)));
    }

    [Fact]
    public void DiagnosisNamesEmptyInputsAndTheTruncationReason()
    {
        string data = Write("colors.jsonl", """
            {"description": "a shade of sky blue", "color": "#87ceeb"}
            {"description": "Tomato: the color tomato", "color": "#ff6347"}
            """);
        var tok = HfTokenizer.FromDirectory(TinyDir);
        DataOptions Opts(string template, int maxLength) => new()
        {
            DataFiles = [data], Format = "colors", TokenizerDir = TinyDir, Template = template, MaxLength = maxLength, Pack = false,
        };
        var o = Opts("qwen_chat", 128);
        var (convs, _) = DataPipeline.Read(o);
        var d = DataPipeline.Diagnose(o, tok, convs, DataPipeline.EncodeAll(convs, DataPipeline.CreateEncoder(o, tok)));
        Assert.Equal((2, 1, "colors.jsonl:1", 0), (d.Trainable, d.EmptyInputs, d.FirstEmptyInput, d.DroppedByTruncation));
        Assert.Contains("1 of 2 samples have an empty input after the map fn (first: colors.jsonl:1)", d.Warnings().Single());

        // llama2_chat's system wrapper alone is longer than max_length: every sample loses its answer.
        var tight = Opts("llama2_chat", 96);
        var dd = DataPipeline.Diagnose(tight, tok);
        int systemTokens = tok.Encode(XtunerTemplates.Format(XtunerTemplates.Get("llama2_chat").System!, ("system", XtunerTemplates.System["colorist"]))).Length;
        Assert.True(systemTokens > 96);
        Assert.Equal((0, 2), (dd.Trainable, dd.DroppedByTruncation));
        Assert.StartsWith($"every sample lost its answer to truncation: system prompt of llama2_chat is {systemTokens} tokens; max_length 96 leaves no room", dd.NoTrainableReason());
    }

    [Fact]
    public void OneJsonObjectFileIsOneErrorNamingItsList()
    {
        string p = Write("wrapped.json", "{\n  \"data\": [\n    {\"text\": \"a\"},\n    {\"text\": \"b\"}\n  ]\n}\n");
        var ex = Assert.Throws<DatasetException>(() => DatasetReader.Read(p, DatasetFormat.Text));
        Assert.Contains("its records are under 'data'", Assert.Single(ex.Errors).Message);
        string dup = Write("dup.csv", "input,input\na,b\n");
        Assert.Contains("column 'input' appears twice", Assert.Single(Assert.Throws<DatasetException>(() => DatasetReader.Read(dup, DatasetFormat.Default)).Errors).Message);
    }
}
