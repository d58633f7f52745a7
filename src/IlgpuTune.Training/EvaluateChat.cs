// XTuner's EvaluateChatHook: answers to evaluation_inputs, generated greedily with the model's current weights before
// training, every evaluation_freq iterations and at the end, written to the log.
using IlgpuTune.Core;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;

namespace IlgpuTune.Training;

public sealed class EvaluateChat
{
    private readonly TrainConfig _cfg;
    private readonly ITokenizer _tokenizer;
    private readonly PromptTemplate? _template;
    private readonly JinjaTemplate? _chatTemplate;
    private readonly string? _system;
    private readonly GenerationOptions _options;

    public EvaluateChat(TrainConfig cfg, ITokenizer tokenizer, string modelDir, ModelConfig modelConfig)
    {
        _cfg = cfg;
        _tokenizer = tokenizer;
        // The config's system, else the one the dataset map fn trains with (colors_map_fn: SYSTEM_TEMPLATE.colorist), so the
        // evaluation prompt is the training prompt.
        _system = cfg.System ?? (cfg.SystemTemplate is { } st ? XtunerChatPrompt.SystemFromTemplate(st) : null)
            ?? DatasetMapFns.System(DatasetMapFns.Parse(cfg.DatasetMapFn));
        if (XtunerTemplates.Prompt.ContainsKey(cfg.PromptTemplate)) _template = XtunerTemplates.Get(cfg.PromptTemplate);
        else if (cfg.PromptTemplate != "none" && ChatTemplates.Resolve(cfg.PromptTemplate, tokenizer.Config) is { } source)
            _chatTemplate = JinjaTemplate.Parse(source);
        _options = new GenerationOptions
        {
            MaxNewTokens = cfg.EvaluationMaxNewTokens,
            Temperature = 0, // greedy, as XTuner's hook
            EosTokenIds = GenerationConfig.EosTokenIds(modelDir, modelConfig, tokenizer.EosTokenId),
            StopWords = _template?.StopWords ?? [],
        };
    }

    public bool Enabled => _cfg.EvaluationInputs.Count > 0;

    /// <summary>The prompt text of one evaluation input (system + one user turn, ready for the answer).</summary>
    public string Prompt(string input)
    {
        if (_chatTemplate is not null)
        {
            var messages = new List<Dictionary<string, object?>>();
            if (_system is not null) messages.Add(new() { ["role"] = "system", ["content"] = _system });
            messages.Add(new() { ["role"] = "user", ["content"] = input });
            return ChatTemplates.Render(_chatTemplate, messages, _tokenizer.Config, addGenerationPrompt: true);
        }
        return new XtunerChatPrompt(_template, _template?.System is null ? null : _system).NextTurn(input);
    }

    /// <summary>Generates an answer to each evaluation input; returns (input, answer) pairs.</summary>
    public List<(string Input, string Answer)> Run(CausalLM model)
    {
        var results = new List<(string, string)>();
        using var _ = Tape.NoGrad();
        foreach (var input in _cfg.EvaluationInputs)
        {
            using var generator = new Generator(model, ids => _tokenizer.Decode(ids));
            var ids = _tokenizer.Encode(Prompt(input), addSpecialTokens: _chatTemplate is null);
            var result = generator.Generate(ids, _options, new Random(_cfg.Seed));
            results.Add((input, result.Text));
        }
        return results;
    }
}
