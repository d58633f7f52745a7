// A model folder loaded for chat in an app: what `ilgpu-tune chat` loads (tokenizer from the model or adapter folder, the
// XTuner template, EOS ids from generation_config.json, optional PEFT adapter and NF4), behind IChatClient (LocalChatClient).
using IlgpuTune.Core;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;

namespace IlgpuTune.Embedding;

/// <summary>What to load; the sampling defaults are `chat`'s (xtuner chat.py's).</summary>
public sealed record LocalModelOptions
{
    /// <summary>Hugging Face model folder (config.json, safetensors, tokenizer.json).</summary>
    public required string ModelPath { get; init; }

    /// <summary>PEFT LoRA adapter folder, or null.</summary>
    public string? AdapterPath { get; init; }

    /// <summary>Quantize the linear weights to NF4 on load (chat --bits 4).</summary>
    public bool Nf4 { get; init; }

    /// <summary>cuda, cpu, ilgpu-cpu or auto (null: ILGPUTUNE_DEVICE, else auto). In Native AOT apps cuda is the driver runtime.</summary>
    public string? Device { get; init; }

    /// <summary>XTuner template name, "auto" (the model's), or null / "none" for raw text (chat --prompt-template).</summary>
    public string? PromptTemplate { get; init; } = "auto";

    /// <summary>System text of the first turn when the messages carry none.</summary>
    public string? System { get; init; }

    public string BotName { get; init; } = "BOT";

    public int MaxNewTokens { get; init; } = 2048;
    public float Temperature { get; init; } = 0.1f;
    public int TopK { get; init; } = 40;
    public float TopP { get; init; } = 0.75f;
    public float RepetitionPenalty { get; init; } = 1f;
    public int Seed { get; init; }
}

public sealed class LocalModel : IDisposable
{
    private LocalModel(LocalModelOptions options, Device device, CausalLM model, HfTokenizer tokenizer, ModelConfig config, PromptTemplate? template,
        int[] eos)
    {
        (Options, Device, Model, Tokenizer, Config, Template, EosTokenIds) = (options, device, model, tokenizer, config, template, eos);
    }

    public LocalModelOptions Options { get; }
    public Device Device { get; }
    public CausalLM Model { get; }
    public HfTokenizer Tokenizer { get; }
    public ModelConfig Config { get; }

    /// <summary>The XTuner template turns are wrapped in (null: raw text).</summary>
    public PromptTemplate? Template { get; }

    public IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>Loads the model, tokenizer and adapter as `ilgpu-tune chat` does; errors name the folder or file.</summary>
    public static LocalModel Load(LocalModelOptions options)
    {
        if (!Directory.Exists(options.ModelPath)) throw new DirectoryNotFoundException($"model folder {options.ModelPath} does not exist");
        var tokenizer = LoadTokenizer(options.ModelPath, options.AdapterPath);
        var config = ModelConfig.Load(options.ModelPath);
        var template = options.PromptTemplate switch
        {
            null or "none" => null,
            "auto" => XtunerTemplates.Get(AutoTemplate(config, tokenizer)),
            var name => XtunerTemplates.Get(name),
        };
        var eos = GenerationConfig.EosTokenIds(options.ModelPath, config, tokenizer.EosTokenId);
        var device = Core.Device.Create(options.Device);
        try
        {
            var model = ModelLoader.Load(options.ModelPath, device, quantization: options.Nf4 ? Numerics.QuantType.Nf4 : null, frozenAsStored: true);
            try
            {
                if (options.AdapterPath is not null) PeftAdapter.Load(options.AdapterPath, model);
                return new LocalModel(options, device, model, tokenizer, config, template, eos);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>chat.py takes the tokenizer from the model; adapter folders written by XTuner often carry one too.</summary>
    public static HfTokenizer LoadTokenizer(string model, string? adapter)
    {
        foreach (var dir in new[] { model, adapter })
            if (dir is not null && File.Exists(Path.Combine(dir, "tokenizer.json"))) return HfTokenizer.FromDirectory(dir);
        throw new FileNotFoundException($"no tokenizer.json in {model}" + (adapter is null ? "" : $" or {adapter}"));
    }

    /// <summary>The XTuner template for `--prompt-template auto`, from the tokenizer's chat tokens, else the model type.</summary>
    public static string AutoTemplate(ModelConfig config, ITokenizer tokenizer)
    {
        if (tokenizer.TokenToId("<|im_start|>") is not null)
            return config.Architecture == Architecture.InternLM2 ? "internlm2_chat" : "qwen_chat";
        if (tokenizer.TokenToId("<|eot_id|>") is not null) return "llama3_chat";
        return config.Spec.PromptTemplate;
    }

    /// <summary>An IChatClient over this model (it does not own the model).</summary>
    public LocalChatClient AsChatClient() => new(this);

    public void Dispose()
    {
        Model.Dispose();
        Device.Dispose();
    }
}
