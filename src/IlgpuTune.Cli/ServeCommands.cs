using Cocona;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed class ServeCommands
{
    [Command("serve", Description = "Serve a model folder (+ a PEFT LoRA adapter) as an OpenAI-compatible API (/v1/chat/completions, /v1/models) " +
        "with a chat page at /")]
    public int Serve([Argument(Description = "model folder (Hugging Face layout, with a chat_template)")] string model,
        [Option("adapter", Description = "PEFT LoRA adapter folder")] string? adapter = null,
        [Option("host", Description = "address to listen on (default loopback; 0.0.0.0 exposes the server to the network)")] string host = "127.0.0.1",
        [Option("port", Description = "TCP port")] int port = 8000,
        [Option("prompt-template", Description = "XTuner prompt template name for a model without a chat_template (default: the tokenizer's chat_template)")] string? promptTemplate = null,
        [Option("device", Description = "cuda, cpu, ilgpu-cpu or auto (default: ILGPUTUNE_DEVICE, else auto)")] string? device = null)
    {
        if (port is < 0 or > 65535) throw new ArgumentException($"--port {port}: expected 0 to 65535");
        using var server = new OpenAiServer(model, adapter, device, promptTemplate);
        var app = server.Build(host, port);
        using var stop = new StopSignal();
        app.StartAsync().GetAwaiter().GetResult();
        Console.WriteLine($"serving '{server.ModelId}' on {string.Join(", ", app.Urls)} (OpenAI API under /v1, chat page at /); Ctrl-C stops");
        try
        {
            Task.Delay(Timeout.Infinite, stop.Token).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
        }
        app.StopAsync().GetAwaiter().GetResult();
        return 0;
    }
}

/// <summary>The chat page (plain HTML and JS, no external assets: it works offline).</summary>
internal static class ChatPage
{
    public static readonly string Html = Read();

    private static string Read()
    {
        using var s = typeof(ChatPage).Assembly.GetManifestResourceStream("serve/chat.html")
            ?? throw new InvalidOperationException("the chat page resource is missing from the build");
        return new StreamReader(s).ReadToEnd();
    }
}
