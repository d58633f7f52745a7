namespace IlgpuTune.Data.Templates;

/// <summary>
/// The text each chat turn adds, as xtuner/tools/chat.py builds it: the first turn starts with
/// SYSTEM.format(system, round, bot_name) when a system text is given and the template has SYSTEM; every turn is
/// INSTRUCTION.format(input, round, bot_name), after the template's SEP when an answer came before it.
/// Without a template a turn is the user's text as is (and there is no SEP).
/// </summary>
public sealed class XtunerChatPrompt
{
    readonly PromptTemplate? _template;
    readonly string? _system;
    readonly string _botName;

    public XtunerChatPrompt(PromptTemplate? template, string? system = null, string botName = "BOT")
    {
        // chat.py drops such a system text silently; a silent template mistake is worse than an error.
        if (system is not null && template?.System is null)
            throw new ArgumentException(template is null
                ? "a system text needs a prompt template"
                : $"prompt template '{template.Name}' has no SYSTEM, so it cannot take a system text");
        _template = template;
        _system = system;
        _botName = botName;
    }

    /// <summary>
    /// The system text of SYSTEM_TEMPLATE[<paramref name="name"/>] (formatted with round 1 and the bot name), as chat.py does for
    /// --system-template.
    /// </summary>
    public static string SystemFromTemplate(string name, string botName = "BOT") =>
        XtunerTemplates.System.TryGetValue(name, out var s)
            ? XtunerTemplates.Format(s, ("round", "1"), ("bot_name", botName))
            : throw new KeyNotFoundException($"unknown system template '{name}'; known: {string.Join(", ", XtunerTemplates.System.Keys)}");

    /// <summary>Turns taken since the start or the last Reset (chat.py's n_turn).</summary>
    public int Round { get; private set; }

    public IReadOnlyList<string> StopWords => _template?.StopWords ?? [];

    /// <summary>The text of the next turn for the user's <paramref name="input"/>; advances Round.</summary>
    public string NextTurn(string input)
    {
        string round = (Round + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string text;
        if (_template is null) text = input;
        else
        {
            text = Round > 0 ? _template.Sep ?? "" : "";
            if (Round == 0 && _system is not null)
                text += XtunerTemplates.Format(_template.System!, ("system", _system), ("round", round), ("bot_name", _botName));
            text += XtunerTemplates.Format(_template.Instruction, ("input", input), ("round", round), ("bot_name", _botName));
        }
        Round++;
        return text;
    }

    public void Reset() => Round = 0;
}
