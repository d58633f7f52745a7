using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>check-dataset as a user meets it: the demo's data is healthy; wrong formats and hopeless truncation say why.</summary>
public class DatasetCliTests(ITestOutputHelper log) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("ilgpu-tune-dscli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("tiny_llama_lora_colorist_e3")]
    [InlineData("tiny_llama_lora_self_cognition_e3")]
    public void TheDemoDatasetsHaveNoEmptyPrompts(string config)
    {
        // The embedded colorist data is "Name: description", so colors_map_fn keeps a description for every sample.
        var (code, stdout, _) = CliRunner.Run(log, "check-dataset", config);
        Assert.Equal(0, code);
        Assert.DoesNotContain("warning:", stdout);
        Assert.Contains("truncated to 128: 0", stdout);
    }

    [Fact]
    public void EmptyInputsAreWarnedAndHopelessTruncationFailsWithTheReason()
    {
        string data = Path.Combine(_dir, "colors.jsonl");
        File.WriteAllText(data, """
            {"description": "a shade of sky blue", "color": "#87ceeb"}
            {"description": "Tomato: the color tomato", "color": "#ff6347"}
            """);
        var (code, stdout, _) = CliRunner.Run(log, "check-dataset", "tiny_llama_lora_colorist_e3", "--data", data);
        Assert.Equal(0, code);
        Assert.Contains("warning: 1 of 2 samples have an empty input after the map fn (first: colors.jsonl:1)", stdout);

        var (code2, _, stderr2) = CliRunner.Run(log, "check-dataset", "tiny_llama_lora_colorist_e3", "--data", data,
            "--template", "llama2_chat", "--max-length", "64");
        Assert.Equal(2, code2);
        Assert.Matches(@"^error: no trainable sample: every sample lost its answer to truncation: system prompt of llama2_chat is \d+ tokens; max_length 64 leaves no room", stderr2.Trim());
    }

    [Fact]
    public void RecordsOfAnotherFormatGetOneLine()
    {
        string data = Path.Combine(_dir, "chat.jsonl");
        File.WriteAllLines(data, Enumerable.Repeat("""{"messages": [{"role": "user", "content": "who are you?"}, {"role": "assistant", "content": "a bot"}]}""", 60));
        var (code, _, stderr) = CliRunner.Run(log, "check-dataset", "tiny_llama_lora_colorist_e3", "--data", data);
        Assert.Equal(2, code);
        string line = Assert.Single(stderr.Trim().Split('\n'));
        Assert.StartsWith("error: chat.jsonl: dataset_map_fn: records look like openai messages", line);
        Assert.EndsWith("set dataset_map_fn: openai_map_fn", line);
    }
}
