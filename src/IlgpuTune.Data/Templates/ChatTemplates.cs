using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Templates;

/// <summary>The model's own HF chat_template, rendered as transformers apply_chat_template(tokenize=False) does.</summary>
public static class ChatTemplates
{
    /// <summary>
    /// The Jinja source a --prompt-template name selects: "auto" (or "default") = the tokenizer's default chat_template,
    /// any other name = a named template from tokenizer_config.json. Null when the tokenizer has no such template.
    /// </summary>
    public static string? Resolve(string name, TokenizerConfig config) =>
        name is "auto" or "default" ? config.ChatTemplate : config.NamedChatTemplates.GetValueOrDefault(name);

    /// <summary>
    /// Renders <paramref name="messages"/> (a JsonElement array or a list of dictionaries) with the special tokens of
    /// <paramref name="config"/> (bos_token, eos_token, unk_token, pad_token when set), tools = documents = None and
    /// <paramref name="kwargs"/> (e.g. enable_thinking) as template variables.
    /// </summary>
    public static string Render(JinjaTemplate template, object messages, TokenizerConfig config, bool addGenerationPrompt,
        IReadOnlyDictionary<string, object?>? kwargs = null)
    {
        var vars = new Dictionary<string, object?>
        {
            ["messages"] = messages,
            ["tools"] = null,
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        if (config.BosToken is { } bos) vars["bos_token"] = bos;
        if (config.EosToken is { } eos) vars["eos_token"] = eos;
        if (config.UnkToken is { } unk) vars["unk_token"] = unk;
        if (config.PadToken is { } pad) vars["pad_token"] = pad;
        if (kwargs is not null) foreach (var (k, v) in kwargs) vars[k] = v;
        return template.Render(vars);
    }
}
