using IlgpuTune.Embedding;
using IlgpuTune.Training;
using Microsoft.Extensions.AI;
using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

// The library surface (IlgpuTune.Embedding) against `ilgpu-tune chat`: same model + adapter, template, options → same answer.
public sealed class LocalChatClientTests(ITestOutputHelper log, TinyChatModelFixture fixture) : IClassFixture<TinyChatModelFixture>
{
    TinyChatModel Tiny => fixture.Model;

    LocalModel Load(bool adapter = true) => LocalModel.Load(new LocalModelOptions
    {
        ModelPath = Tiny.ModelDir, AdapterPath = adapter ? Tiny.AdapterDir : null, Device = "cpu", PromptTemplate = "qwen_chat",
    });

    string Cli(params string[] args)
    {
        var (code, stdout, _) = CliRunner.Run(log, ["chat", Tiny.ModelDir, "--prompt-template", "qwen_chat", "--device", "cpu", .. args]);
        Assert.Equal(0, code);
        return stdout[..^1];
    }

    [Fact]
    public async Task AnswerEqualsChatCommand_GreedyWithAdapterAndSystem_StreamingToo()
    {
        string expected = Cli("--adapter", Tiny.AdapterDir, "--system", "Be brief.", "--prompt", "hello", "--temperature", "0", "--max-new-tokens", "10");
        using var model = Load();
        using var client = model.AsChatClient();
        ChatMessage[] messages = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "hello")];
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 10 };
        var response = await client.GetResponseAsync(messages, options);
        Assert.Equal(expected, response.Text);
        Assert.NotNull(response.FinishReason);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(messages, options)) updates.Add(u);
        Assert.Equal(expected, string.Concat(updates.Select(u => u.Text)));
        Assert.Equal(response.FinishReason, updates[^1].FinishReason);
    }

    [Fact]
    public async Task SamplingSeedTopPAndStopSequencesAreChatCommandsOptions()
    {
        string[] sampling = ["--prompt", "hello", "--temperature", "1.2", "--top-k", "0", "--top-p", "0.9", "--max-new-tokens", "16", "--seed", "7"];
        string expected = Cli(sampling);
        using var model = Load(adapter: false);
        using var client = model.AsChatClient();
        var options = new ChatOptions { Temperature = 1.2f, TopK = 0, TopP = 0.9f, MaxOutputTokens = 16, Seed = 7 };
        Assert.Equal(expected, (await client.GetResponseAsync([new ChatMessage(ChatRole.User, "hello")], options)).Text);
        Assert.True(expected.Length >= 4, $"answer too short for the test: '{expected}'");
        string stop = expected.Substring(2, 2);
        options.StopSequences = [stop];
        var cut = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "hello")], options);
        Assert.Equal(Cli([.. sampling, "--stop-words", stop]), cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
    }

    [Fact]
    public async Task MaxOutputTokensEndsWithLength_CancellationThrows_BadConversationsAreNamed()
    {
        using var model = Load(adapter: false);
        using var client = model.AsChatClient();
        var r = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "hello")], new ChatOptions { Temperature = 0, MaxOutputTokens = 3 });
        Assert.True(r.FinishReason == ChatFinishReason.Length || r.Usage!.OutputTokenCount < 3);
        Assert.True(r.Usage!.OutputTokenCount <= 3);
        // A follow-up turn reuses the cached conversation: same answer as a fresh client gives for the same messages.
        ChatMessage[] turns = [new(ChatRole.User, "hello"), new(ChatRole.Assistant, r.Text), new(ChatRole.User, "hello world")];
        var again = await client.GetResponseAsync(turns, new ChatOptions { Temperature = 0, MaxOutputTokens = 4 });
        using var fresh = model.AsChatClient();
        Assert.Equal((await fresh.GetResponseAsync(turns, new ChatOptions { Temperature = 0, MaxOutputTokens = 4 })).Text, again.Text);
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "hello")], null, cancelled.Token));
        var e = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "a"), new ChatMessage(ChatRole.Assistant, "b")]));
        Assert.StartsWith("the conversation must end with a user message", e.Message);
        Assert.Same(model, client.GetService(typeof(LocalModel)));
    }

    [Fact]
    public void FineTuningRunsFromAConfigObject()
    {
        var config = Builtins.LoadConfig(Builtins.DefaultConfig, ["max_iters=2", "device=cpu", "logging_steps=1", "evaluation_freq=1000"]);
        using var dir = new TestKit.TempDir();
        var result = FineTuning.Train(config, new TrainOptions { WorkDir = dir.Path, Console = log.WriteLine });
        Assert.Equal(2, result.Done);
        Assert.True(result.AdapterDir is { } adapter ? Directory.Exists(adapter) : result.LastCheckpoint is not null, "the run left no adapter or checkpoint");
        var bad = Assert.Throws<ConfigException>(() => FineTuning.Train(new TrainConfig { DataPath = ["x.jsonl"] }));
        Assert.Equal("TrainConfig: key 'pretrained_model_name_or_path' is required", bad.Message);
    }
}
