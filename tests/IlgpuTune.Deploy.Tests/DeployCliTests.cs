using System.Diagnostics;
using System.Text;
using System.Text.Json;
using IlgpuTune.Cli;
using IlgpuTune.IO;
using Xunit.Abstractions;

namespace IlgpuTune.Deploy.Tests;

// `convert gguf` and `serve` as a user runs them: the built ilgpu-tune.dll in a child process.
public sealed class DeployCliTests(ITestOutputHelper log) : IDisposable
{
    readonly TestKit.TempDir _dir = new();

    [Fact]
    public void ConvertGgufWritesOneFileAndSaysWhat()
    {
        string output = _dir.File("tiny.gguf");
        var (code, stdout, stderr) = Run(TimeSpan.FromMinutes(2), "convert", "gguf", TinyModels.EmbeddedDefault, output, "--outtype", "q4_0");
        Assert.Equal(0, code);
        Assert.Contains("llama -> ", stdout);
        Assert.Equal("", stderr);
        var file = GgufFile.Read(output);
        Assert.Equal("llama", file.Metadata["general.architecture"].Value);
        Assert.Contains(file.Tensors, t => t.Type == GgmlType.Q4_0);
        Assert.Equal(GgmlType.Q8_0, file.Tensors.Single(t => t.Name == "output.weight").Type);
        Assert.Equal([output], Directory.GetFiles(_dir.Path));
    }

    [Theory]
    [InlineData("--outtype", "q5_k", "--outtype 'q5_k': expected f16, bf16, q8_0 or q4_0")]
    [InlineData("--adapter", "/nonexistent-adapter", "/nonexistent-adapter")]
    public void ConvertGgufMistakesAreOneErrorLineAndNoFile(string option, string value, string message)
    {
        string output = _dir.File("x.gguf");
        var (code, _, stderr) = Run(TimeSpan.FromMinutes(2), "convert", "gguf", TinyModels.EmbeddedDefault, output, option, value);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains(message, stderr);
        Assert.Single(stderr.TrimEnd().Split('\n'));
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void ConvertGgufOfAFolderWithoutTokenizerNamesIt()
    {
        var (code, _, stderr) = Run(TimeSpan.FromMinutes(2), "convert", "gguf", TestKit.Repo.Fixture("tiny/llama"), _dir.File("x.gguf"));
        Assert.Equal(2, code);
        Assert.Contains("no tokenizer.json or tokenizer.model", stderr);
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void ServeWithoutChatTemplateIsRefused()
    {
        var (code, _, stderr) = Run(TimeSpan.FromMinutes(2), "serve", TinyModels.EmbeddedDefault, "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("no chat_template", stderr);
        Assert.Contains("--prompt-template", stderr);
    }

    [Fact]
    public async Task ServeWithAnXtunerTemplateAnswersAsChatDoes()
    {
        const string question = "What color is the sky?";
        var chat = Run(TimeSpan.FromMinutes(2), "chat", TinyModels.EmbeddedDefault, "--prompt-template", "qwen_chat", "--temperature", "0",
            "--max-new-tokens", "24", "--device", "cpu", "--prompt", question);
        Assert.Equal(0, chat.Code);
        await Serving(["serve", TinyModels.EmbeddedDefault, "--prompt-template", "qwen_chat", "--port", "0", "--device", "cpu"], async url =>
        {
            using var http = new HttpClient();
            var body = "{\"messages\": [{\"role\": \"user\", \"content\": \"" + question + "\"}], \"temperature\": 0, \"max_tokens\": 24}";
            var response = await http.PostAsync(url + "/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            string answer = json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
            log.WriteLine(answer);
            Assert.Equal(chat.Stdout.TrimEnd('\n'), answer);
        });
    }

    [Fact]
    public async Task ServeListensOnLoopbackAndStopsOnCtrlC()
    {
        string model = TinyModels.Prepare("llama", _dir.Path);
        await Serving(["serve", model, "--port", "0", "--device", "cpu"], async url =>
        {
            Assert.StartsWith("http://127.0.0.1:", url);
            using var http = new HttpClient();
            var models = JsonDocument.Parse(await http.GetStringAsync(url + "/v1/models")).RootElement;
            Assert.Equal("llama", models.GetProperty("data")[0].GetProperty("id").GetString());
            Assert.Contains("<title>ilgpu-tune chat</title>", await http.GetStringAsync(url + "/"));
        });
    }

    // Starts `serve` (as given), runs the check against its URL, then stops it with SIGINT: it must exit 0.
    async Task Serving(string[] args, Func<string, Task> check)
    {
        using var p = Process.Start(Start(args))!;
        try
        {
            var stderr = p.StandardError.ReadToEndAsync();
            string line = await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromMinutes(2)) ?? throw new Exception(await stderr);
            log.WriteLine(line);
            string url = line.Split(' ').First(w => w.StartsWith("http://", StringComparison.Ordinal)).TrimEnd(',', ' ');
            await check(url);
            using (var kill = Process.Start("kill", ["-INT", p.Id.ToString()])) await kill.WaitForExitAsync();
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), "serve did not stop on SIGINT");
            Assert.Equal(0, p.ExitCode);
        }
        finally
        {
            if (!p.HasExited) p.Kill();
        }
    }

    ProcessStartInfo Start(params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, StandardOutputEncoding = Encoding.UTF8, StandardErrorEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(typeof(ChatCommands).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    (int Code, string Stdout, string Stderr) Run(TimeSpan timeout, params string[] args)
    {
        using var p = Process.Start(Start(args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) p.Kill();
        p.WaitForExit();
        log.WriteLine($"exit {p.ExitCode}\nstdout: {stdout.Result}\nstderr: {stderr.Result}");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    public void Dispose() => _dir.Dispose();
}
