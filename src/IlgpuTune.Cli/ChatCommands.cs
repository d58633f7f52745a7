// `chat`: xtuner/tools/chat.py for our models. Loads an HF model folder (+ a PEFT adapter), its tokenizer, an XTuner
// prompt template, and answers either one --prompt or an interactive conversation. Defaults are chat.py's.
using System.Text.Json.Nodes;
using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Embedding;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed class ChatCommands
{
    [Command("chat", Description = "Chat with a model folder (config.json, safetensors, tokenizer.json), optionally with a PEFT LoRA adapter: " +
        "interactive (an empty line sends; RESET clears the history, EXIT quits) or one answer with --prompt")]
    public int Chat(
        [Argument(Description = "model folder (Hugging Face layout)")] string model,
        [Option("adapter", Description = "PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")] string? adapter = null,
        [Option("prompt-template", Description = "XTuner prompt template name, or auto (the template matching the model); none = raw text")] string? promptTemplate = null,
        [Option("system", Description = "system text for the first turn")] string? system = null,
        [Option("system-template", Description = "XTuner system template name (alpaca, colorist, ...)")] string? systemTemplate = null,
        [Option("bot-name", Description = "the {bot_name} of templates")] string botName = "BOT",
        [Option("max-new-tokens", Description = "most tokens per answer")] int maxNewTokens = 2048,
        [Option("temperature", Description = "0 = greedy")] float temperature = 0.1f,
        [Option("top-k", Description = "0 = off")] int topK = 40,
        [Option("top-p", Description = "1 = off")] float topP = 0.75f,
        [Option("repetition-penalty", Description = "1 = off")] float repetitionPenalty = 1f,
        [Option("stop-words", Description = "stop when the answer ends with this text (repeat the option for several)")] string[]? stopWords = null,
        [Option("seed", Description = "sampling seed")] int seed = 0,
        [Option("prompt", Description = "answer this one prompt and exit")] string? prompt = null,
        [Option("device", Description = "cuda, cpu, ilgpu-cpu or auto (default: ILGPUTUNE_DEVICE, else auto)")] string? device = null,
        [Option("bits", Description = "4: quantize the model's linear weights to NF4 on load (as chat.py --bits 4); default: as saved")] int? bits = null,
        [Option("no-streamer", Description = "print each answer when it is complete instead of token by token")] bool noStreamer = false)
    {
        if (system is not null && systemTemplate is not null) throw new ArgumentException("give --system or --system-template, not both");
        if (bits is 8) throw new ArgumentException("--bits 8: 8-bit (LLM.int8) loading is not supported; use --bits 4 (NF4) or leave --bits out");
        if (bits is not (null or 4)) throw new ArgumentException($"--bits {bits}: expected 4 (or 8, which is not supported yet)");
        if (!Directory.Exists(model)) throw new DirectoryNotFoundException($"model folder {model} does not exist");
        var tokenizer = LocalModel.LoadTokenizer(model, adapter);
        var config = ModelConfig.Load(model);
        var template = promptTemplate switch
        {
            null or "none" => null,
            "auto" => XtunerTemplates.Get(LocalModel.AutoTemplate(config, tokenizer)),
            _ => XtunerTemplates.Get(promptTemplate),
        };
        if (promptTemplate == "auto")
            Console.Error.WriteLine($"note: --prompt-template auto uses XTuner's '{template!.Name}' for {config.ModelType} " +
                "(the tokenizer's own chat_template is not rendered yet)");
        string? systemText = systemTemplate is null ? system : XtunerChatPrompt.SystemFromTemplate(systemTemplate, botName);
        var chatPrompt = new XtunerChatPrompt(template, systemText, botName);
        var options = new GenerationOptions
        {
            MaxNewTokens = maxNewTokens,
            Temperature = temperature,
            TopK = topK,
            TopP = topP,
            RepetitionPenalty = repetitionPenalty,
            EosTokenIds = EosTokenIds(model, config, tokenizer),
            StopWords = [.. stopWords ?? [], .. chatPrompt.StopWords],
        };
        options.Validate();

        using var dev = Device.Create(device);
        using var lm = ModelLoader.Load(model, dev, quantization: bits is 4 ? IlgpuTune.Numerics.QuantType.Nf4 : null, frozenAsStored: true);
        if (adapter is not null) PeftAdapter.Load(adapter, lm);
        using var session = new ChatSession(lm, tokenizer, chatPrompt, options, seed) { Stream = !noStreamer };
        if (prompt is not null)
        {
            session.AnswerTo(prompt, Console.Out);
            return 0;
        }
        Console.Error.WriteLine($"device: {dev}");
        // Ctrl-C ends the answer being generated; at the prompt it quits.
        using var signals = new Signals(_ => session.CancelAnswer());
        return session.Run(Console.In, Console.Out);
    }

    internal static int[] EosTokenIds(string model, ModelConfig config, ITokenizer tokenizer) =>
        IlgpuTune.Model.Generation.GenerationConfig.EosTokenIds(model, config, tokenizer.EosTokenId);
}
