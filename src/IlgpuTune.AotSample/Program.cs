// A Native AOT console app embedding the engine (issue 15): one chat answer through IChatClient, a few training steps
// from a config object, or the transformers parity cases of fixture folders. --device cpu|cuda|auto (default auto: the GPU
// through the CUDA driver runtime when there is one, else the CPU). Arguments:
//   chat MODEL_DIR [--adapter DIR] [--template NAME] [--system TEXT] [--max-new-tokens N] [--temperature T] [--bits 4] [--device D]
//        --prompt TEXT
//   train CONFIG [--work-dir DIR] [--max-iters N] [--device D]   (CONFIG: a YAML file or a built-in name, as `ilgpu-tune train`)
//   parity FIXTURE_DIR... [--bf16] [--device D]                  (tests/fixtures/tiny/<arch> folders, as `ilgpu-tune parity`)
using System.Diagnostics;
using System.Globalization;
using IlgpuTune.Core;
using IlgpuTune.Embedding;
using IlgpuTune.Model;
using IlgpuTune.Training;
using Microsoft.Extensions.AI;

try
{
    return args switch
    {
        ["chat", var model, .. var rest] => await Chat(model, rest),
        ["train", var config, .. var rest] => Train(config, rest),
        ["parity", .. var rest] => RunParity(rest),
        _ => Usage(),
    };
}
catch (Exception e) when (e is ArgumentException or IOException or ConfigException or InvalidDataException or NotSupportedException
                              or InvalidOperationException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}

static int Usage()
{
    Console.Error.WriteLine("usage: IlgpuTune.AotSample chat MODEL_DIR [--adapter DIR] [--template NAME] [--system TEXT] [--max-new-tokens N] " +
        "[--temperature T] [--bits 4] [--device cpu|cuda|auto] --prompt TEXT\n" +
        "       IlgpuTune.AotSample train CONFIG [--work-dir DIR] [--max-iters N] [--device cpu|cuda|auto]\n" +
        "       IlgpuTune.AotSample parity FIXTURE_DIR... [--bf16] [--device cpu|cuda|auto]");
    return 2;
}

static async Task<int> Chat(string model, string[] rest)
{
    string prompt = Option(rest, "--prompt") ?? throw new ArgumentException("--prompt is required");
    var start = Stopwatch.StartNew();
    using var local = LocalModel.Load(new LocalModelOptions
    {
        ModelPath = model, AdapterPath = Option(rest, "--adapter"), PromptTemplate = Option(rest, "--template") ?? "auto", Device = DeviceOption(rest),
        Nf4 = Option(rest, "--bits") switch
        {
            null => false,
            "4" => true,
            var b => throw new ArgumentException($"--bits {b}: expected 4 (NF4 base weights), or leave it out"),
        },
    });
    using IChatClient chat = local.AsChatClient();
    var options = new ChatOptions
    {
        MaxOutputTokens = Option(rest, "--max-new-tokens") is { } n ? int.Parse(n, CultureInfo.InvariantCulture) : null,
        Temperature = Option(rest, "--temperature") is { } t ? float.Parse(t, CultureInfo.InvariantCulture) : null,
    };
    List<ChatMessage> messages = Option(rest, "--system") is { } system ? [new(ChatRole.System, system)] : [];
    messages.Add(new ChatMessage(ChatRole.User, prompt));
    double? firstToken = null;
    await foreach (var update in chat.GetStreamingResponseAsync(messages, options))
    {
        firstToken ??= start.Elapsed.TotalMilliseconds;
        Console.Write(update.Text);
    }
    Console.WriteLine();
    Console.Error.WriteLine($"device: {local.Device.Name}");
    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"time to first token: {firstToken ?? start.Elapsed.TotalMilliseconds:F0} ms (from start of load)"));
    return 0;
}

static int Train(string config, string[] rest)
{
    var overrides = new List<string> { $"device={DeviceOption(rest) ?? "cpu"}" };
    if (Option(rest, "--max-iters") is { } iters) overrides.Add($"max_iters={iters}");
    var result = FineTuning.Train(Builtins.LoadConfig(config, overrides),
        new TrainOptions { WorkDir = Option(rest, "--work-dir") });
    Console.WriteLine($"trained {result.Done} iterations; checkpoint {result.LastCheckpoint}; adapter {result.AdapterDir}");
    return 0;
}

static int RunParity(string[] rest)
{
    var fixtures = new List<string>();
    for (int i = 0; i < rest.Length; i++)
    {
        if (rest[i] == "--device") i++;
        else if (rest[i] != "--bf16") fixtures.Add(rest[i]);
    }
    if (fixtures.Count == 0) throw new ArgumentException("parity needs at least one fixture folder");
    using var device = Device.Create(DeviceOption(rest));
    if (rest.Contains("--bf16")) device.Precision = Precision.BF16;
    Console.WriteLine($"device: {device}");
    var all = new List<ParityRow>();
    foreach (var dir in fixtures) all.AddRange(Parity.Run(dir, device));
    Console.Write(Parity.Format(all));
    int failed = all.Count(r => !r.Pass);
    Console.WriteLine($"parity: {all.Count - failed} passed, {failed} failed");
    return failed == 0 ? 0 : 1;
}

// --device cpu|cuda|auto; absent: ILGPUTUNE_DEVICE, else auto (train: cpu, as before).
static string? DeviceOption(string[] args) => Option(args, "--device") switch
{
    null => null,
    { } d when d is "cpu" or "cuda" or "auto" => d,
    var d => throw new ArgumentException($"--device {d}: expected cpu, cuda or auto"),
};

static string? Option(string[] args, string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}
