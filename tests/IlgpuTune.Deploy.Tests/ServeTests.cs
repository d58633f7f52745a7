using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json;
using IlgpuTune.Cli;
using IlgpuTune.Core;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;

namespace IlgpuTune.Deploy.Tests;

/// <summary>One `serve` of the tiny Qwen2 fixture (with a ChatML template) on a free loopback port, shared by a test class.</summary>
public class ServedModel : IAsyncLifetime
{
    /// <summary>The model folder to serve (made under <paramref name="dir"/> if need be) and its XTuner prompt template, if any.</summary>
    protected virtual (string Model, string? PromptTemplate) Choose(string dir) => (TinyModels.Prepare("qwen2", dir), null);

    readonly TestKit.TempDir _dir = new();
    OpenAiServer? _server;
    WebApplication? _app;

    public string ModelDir { get; private set; } = "";
    public string BaseUrl { get; private set; } = "";
    public string ModelId => _server!.ModelId;

    public async Task InitializeAsync()
    {
        (ModelDir, var template) = Choose(_dir.Path);
        _server = new OpenAiServer(ModelDir, null, "cpu", template);
        _app = _server.Build("127.0.0.1", 0);
        await _app.StartAsync();
        BaseUrl = _app.Urls.Single();
    }

    /// <summary>Our engine's greedy answer to <paramref name="messages"/> (role, content), as the server should give it.</summary>
    public string Expected(IEnumerable<(string Role, string Content)> messages, int maxTokens)
    {
        var tokenizer = HfTokenizer.FromDirectory(ModelDir);
        var list = messages.Select(m => new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList();
        var prompt = ChatTemplates.Render(JinjaTemplate.Parse(tokenizer.Config.ChatTemplate!), list, tokenizer.Config, addGenerationPrompt: true);
        using var device = Device.Create("cpu");
        using var lm = ModelLoader.Load(ModelDir, device);
        using var generator = new Generator(lm, ids => tokenizer.Decode(ids));
        var options = new GenerationOptions { MaxNewTokens = maxTokens, Temperature = 0, EosTokenIds = [tokenizer.EosTokenId!.Value] };
        return generator.Generate(tokenizer.Encode(prompt), options, new Random(0)).Text;
    }

    public async Task DisposeAsync()
    {
        if (_app is not null) await _app.DisposeAsync();
        _server?.Dispose();
        _dir.Dispose();
    }
}

/// <summary>The built-in tiny model (trained on colors) served with XTuner's qwen_chat template: answers that read like text.</summary>
public sealed class ServedTinyDefault : ServedModel
{
    protected override (string Model, string? PromptTemplate) Choose(string dir) => (TinyModels.EmbeddedDefault, "qwen_chat");
}

public sealed class ServeTests(ServedModel served) : IClassFixture<ServedModel>
{
    static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(60) };

    ChatClient OpenAi() => new(served.ModelId, new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(served.BaseUrl + "/v1") });

    [Fact]
    public async Task OpenAiClientGetsTheGreedyAnswerWholeAndStreamed()
    {
        var expected = served.Expected([("system", "You are terse."), ("user", "the cat sat on")], 12);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        List<OpenAI.Chat.ChatMessage> messages = [new SystemChatMessage("You are terse."), new UserChatMessage("the cat sat on")];
        ChatCompletion whole = await OpenAi().CompleteChatAsync(messages, options);
        Assert.Equal(expected, whole.Content[0].Text);
        Assert.True(whole.Usage.OutputTokenCount > 0 && whole.Usage.InputTokenCount > 0);
        var streamed = new StringBuilder();
        ChatFinishReason? finish = null;
        int updates = 0;
        await foreach (var update in OpenAi().CompleteChatStreamingAsync(messages, options))
        {
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
            finish ??= update.FinishReason;
            updates++;
        }
        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.True(updates > 2, "the answer came in one piece, not streamed");
    }

    [Fact]
    public async Task ExtensionsAiChatClientGetsTheSameAnswer()
    {
        var expected = served.Expected([("user", "is it on the mat?")], 10);
        IChatClient client = OpenAi().AsIChatClient();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 10 };
        var response = await client.GetResponseAsync("is it on the mat?", options);
        Assert.Equal(expected, response.Text);
        var streamed = new StringBuilder();
        await foreach (var update in client.GetStreamingResponseAsync("is it on the mat?", options)) streamed.Append(update.Text);
        Assert.Equal(expected, streamed.ToString());
        var models = await Http.GetStringAsync(served.BaseUrl + "/v1/models");
        Assert.Equal(served.ModelId, JsonDocument.Parse(models).RootElement.GetProperty("data")[0].GetProperty("id").GetString());
    }

    [Fact]
    public async Task StopSequenceCutsTheAnswer()
    {
        var full = served.Expected([("user", "the cat sat on")], 12);
        Assert.True(full.Length >= 4, $"answer '{full}' too short to cut");
        string stop = full.Substring(full.Length / 2, 2);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12, StopSequences = { stop } };
        ChatCompletion c = await OpenAi().CompleteChatAsync([new UserChatMessage("the cat sat on")], options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], c.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, c.FinishReason);
    }

    [Theory]
    [InlineData("{\"messages\": [", "invalid_request")]
    [InlineData("{\"model\": \"gpt-4\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "model_not_found")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 100000}", "context_length_exceeded")]
    [InlineData("{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", "invalid_request")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 7}", "invalid_request")]
    [InlineData("{\"messages\": []}", "invalid_request")]
    public async Task BadRequestsGet400WithAnOpenAiErrorAndTheServerGoesOn(string body, string code)
    {
        var response = await Http.PostAsync(served.BaseUrl + "/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        ChatCompletion ok = await OpenAi().CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 2 });
        Assert.NotNull(ok.Content);
    }

    [Fact]
    public async Task OversizedPromptAndBodyAreRefused()
    {
        string longPrompt = string.Join(' ', Enumerable.Repeat("cat", 200)); // > the 128-token context
        var e = await Assert.ThrowsAsync<ClientResultException>(() => OpenAi().CompleteChatAsync([new UserChatMessage(longPrompt)]));
        Assert.Equal(400, e.Status);
        Assert.Contains("context", e.Message);
        var huge = "{\"messages\": [{\"role\": \"user\", \"content\": \"" + new string('a', 2 << 20) + "\"}]}";
        // Expect: 100-continue lets the server refuse by Content-Length before the client sends the body.
        var request = new HttpRequestMessage(HttpMethod.Post, served.BaseUrl + "/v1/chat/completions")
        {
            Content = new StringContent(huge, Encoding.UTF8, "application/json"),
        };
        request.Headers.ExpectContinue = true;
        var response = await Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal("request_too_large", error.GetProperty("code").GetString());
    }

    [Fact]
    public async Task ConcurrentRequestsAreQueuedAndAClientThatLeavesFreesTheServer()
    {
        var expected = served.Expected([("user", "the cat sat on")], 12);
        // A streaming client that goes away after the first event.
        using (var cts = new CancellationTokenSource())
        {
            var request = new HttpRequestMessage(HttpMethod.Post, served.BaseUrl + "/v1/chat/completions")
            {
                Content = new StringContent("{\"messages\": [{\"role\": \"user\", \"content\": \"the cat\"}], \"stream\": true, \"temperature\": 1}",
                    Encoding.UTF8, "application/json"),
            };
            using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
            using var stream = await response.Content.ReadAsStreamAsync(cts.Token);
            Assert.StartsWith("data: ", new StreamReader(stream).ReadLine());
            cts.Cancel();
        }
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => OpenAi().CompleteChatAsync([new UserChatMessage("the cat sat on")], options)));
        Assert.All(answers, a => Assert.Equal(expected, a.Value.Content[0].Text));
    }
}
