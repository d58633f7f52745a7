// A Native AOT console app embedding the engine (issue 15): one chat answer through IChatClient, or a few training steps
// from a config object. Arguments:
//   chat MODEL_DIR [--adapter DIR] [--template NAME] [--system TEXT] [--max-new-tokens N] [--temperature T] --prompt TEXT
//   train CONFIG [--work-dir DIR] [--max-iters N]       (CONFIG: a YAML file or a built-in name, as `ilgpu-tune train`)
using System.Globalization;
using IlgpuTune.Embedding;
using IlgpuTune.Training;
using Microsoft.Extensions.AI;

try
{
    return args switch
    {
        ["chat", var model, .. var rest] => await Chat(model, rest),
        ["train", var config, .. var rest] => Train(config, rest),
        _ => Usage(),
    };
}
catch (Exception e) when (e is ArgumentException or IOException or ConfigException or InvalidDataException or NotSupportedException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}

static int Usage()
{
    Console.Error.WriteLine("usage: IlgpuTune.AotSample chat MODEL_DIR [--adapter DIR] [--template NAME] [--system TEXT] [--max-new-tokens N] " +
        "[--temperature T] --prompt TEXT\n       IlgpuTune.AotSample train CONFIG [--work-dir DIR] [--max-iters N]");
    return 2;
}

static async Task<int> Chat(string model, string[] rest)
{
    string prompt = Option(rest, "--prompt") ?? throw new ArgumentException("--prompt is required");
    using var local = LocalModel.Load(new LocalModelOptions
    {
        ModelPath = model, AdapterPath = Option(rest, "--adapter"), PromptTemplate = Option(rest, "--template") ?? "auto",
    });
    using IChatClient chat = local.AsChatClient();
    var options = new ChatOptions
    {
        MaxOutputTokens = Option(rest, "--max-new-tokens") is { } n ? int.Parse(n, CultureInfo.InvariantCulture) : null,
        Temperature = Option(rest, "--temperature") is { } t ? float.Parse(t, CultureInfo.InvariantCulture) : null,
    };
    List<ChatMessage> messages = Option(rest, "--system") is { } system ? [new(ChatRole.System, system)] : [];
    messages.Add(new ChatMessage(ChatRole.User, prompt));
    await foreach (var update in chat.GetStreamingResponseAsync(messages, options)) Console.Write(update.Text);
    Console.WriteLine();
    Console.Error.WriteLine($"device: {local.Device.Name}");
    return 0;
}

static int Train(string config, string[] rest)
{
    var overrides = new List<string> { "device=cpu" };
    if (Option(rest, "--max-iters") is { } iters) overrides.Add($"max_iters={iters}");
    var result = FineTuning.Train(Builtins.LoadConfig(config, overrides),
        new TrainOptions { WorkDir = Option(rest, "--work-dir") });
    Console.WriteLine($"trained {result.Done} iterations; checkpoint {result.LastCheckpoint}; adapter {result.AdapterDir}");
    return 0;
}

static string? Option(string[] args, string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}
