using System.Text.Json;
using IlgpuTune.Data.Templates;

namespace IlgpuTune.Data.Datasets;

/// <summary>The dataset_map_fn of an XTuner config (xtuner/dataset/map_fns/dataset_map_fns).</summary>
public enum DatasetFormat
{
    /// <summary>Already {"conversation": [{"system","input","output","output_with_loss"}...]} (dataset_map_fn=None).</summary>
    Conversation,
    /// <summary>alpaca_map_fn: {"instruction","input","output"}; no system (XTuner removed it in v0.1.12).</summary>
    Alpaca,
    /// <summary>oasst1_map_fn: {"text": "### Human: ... ### Assistant: ..."}.</summary>
    Oasst1,
    /// <summary>colors_map_fn: {"description": "Name: description", "color"} with SYSTEM_TEMPLATE.colorist; keeps the text after ':'.</summary>
    Colors,
    /// <summary>openai_map_fn: {"messages": [{"role","content","loss"?}...]}.</summary>
    OpenAI,
    /// <summary>pretrain_map_fn: {"text"} for incremental pre-training (no EOS appended).</summary>
    Text,
    /// <summary>default_map_fn: {"input","output"} (plus an optional "system" column, e.g. from a spreadsheet).</summary>
    Default,
    /// <summary>alpaca_zh_map_fn: {"instruction_zh","input_zh","output_zh"}.</summary>
    AlpacaZh,
    /// <summary>arxiv_map_fn: {"abstract","title"} with SYSTEM_TEMPLATE.arxiv_gentile.</summary>
    Arxiv,
    /// <summary>code_alpaca_map_fn: {"prompt","completion"} with SYSTEM_TEMPLATE.coder.</summary>
    CodeAlpaca,
    /// <summary>tiny_codes_map_fn: {"prompt","response"} with SYSTEM_TEMPLATE.coder.</summary>
    TinyCodes,
    /// <summary>crime_kg_assitant_map_fn: {"input","output"} with SYSTEM_TEMPLATE.lawyer.</summary>
    CrimeKgAssitant,
    /// <summary>law_reference_map_fn: {"question","answer"} with SYSTEM_TEMPLATE.lawyer.</summary>
    LawReference,
    /// <summary>medical_map_fn: {"instruction","input","output"} with SYSTEM_TEMPLATE.medical.</summary>
    Medical,
    /// <summary>sql_map_fn: {"context","question","answer"} with SYSTEM_TEMPLATE.sql.</summary>
    Sql,
    /// <summary>openorca_map_fn: {"system_prompt","question","response"}.</summary>
    OpenOrca,
    /// <summary>stack_exchange_map_fn: {"question","response"}.</summary>
    StackExchange,
    /// <summary>wizardlm_map_fn: {"conversations": [{"from": "human"|"gpt", "value"}...]} (ShareGPT style).</summary>
    WizardLM,
}

/// <summary>XTuner's dataset map fns (v0.2.0), with every missing field or wrong type reported instead of a KeyError.</summary>
public static class DatasetMapFns
{
    static readonly (DatasetFormat Format, string Name, string[] Aliases)[] s_names =
    [
        (DatasetFormat.Conversation, "conversation", ["none", "null"]),
        (DatasetFormat.Alpaca, "alpaca", []),
        (DatasetFormat.Oasst1, "oasst1", []),
        (DatasetFormat.Colors, "colors", ["colorist"]),
        (DatasetFormat.OpenAI, "openai", ["messages"]),
        (DatasetFormat.Text, "text", ["pretrain"]),
        (DatasetFormat.Default, "default", []),
        (DatasetFormat.AlpacaZh, "alpaca_zh", []),
        (DatasetFormat.Arxiv, "arxiv", []),
        (DatasetFormat.CodeAlpaca, "code_alpaca", []),
        (DatasetFormat.TinyCodes, "tiny_codes", []),
        (DatasetFormat.CrimeKgAssitant, "crime_kg_assitant", ["crime_kg_assistant"]),
        (DatasetFormat.LawReference, "law_reference", []),
        (DatasetFormat.Medical, "medical", []),
        (DatasetFormat.Sql, "sql", []),
        (DatasetFormat.OpenOrca, "openorca", []),
        (DatasetFormat.StackExchange, "stack_exchange", []),
        (DatasetFormat.WizardLM, "wizardlm", ["sharegpt"]),
    ];

    /// <summary>The names accepted for dataset_map_fn / --format (each also with XTuner's "_map_fn" suffix).</summary>
    public static IReadOnlyList<string> Names => s_names.Select(n => n.Name).ToArray();

    public static DatasetFormat Parse(string name)
    {
        string n = name.Trim().ToLowerInvariant();
        if (n.EndsWith("_map_fn", StringComparison.Ordinal)) n = n[..^"_map_fn".Length];
        foreach (var (format, canonical, aliases) in s_names)
            if (n == canonical || aliases.Contains(n)) return format;
        throw new ArgumentException($"unknown dataset format '{name}' ({string.Join(", ", Names)})");
    }

    /// <summary>The name of a format as dataset_map_fn takes it ("openai_map_fn"; "None" for conversation).</summary>
    public static string MapFnName(DatasetFormat f) =>
        f == DatasetFormat.Conversation ? "None" : (f == DatasetFormat.Text ? "pretrain" : s_names.First(n => n.Format == f).Name) + "_map_fn";

    /// <summary>The system text a map fn puts in every turn (SYSTEM_TEMPLATE.x), or null when it sets none.</summary>
    public static string? System(DatasetFormat f) => f switch
    {
        DatasetFormat.Colors => XtunerTemplates.System["colorist"],
        DatasetFormat.Arxiv => XtunerTemplates.System["arxiv_gentile"],
        DatasetFormat.CodeAlpaca or DatasetFormat.TinyCodes => XtunerTemplates.System["coder"],
        DatasetFormat.CrimeKgAssitant or DatasetFormat.LawReference => XtunerTemplates.System["lawyer"],
        DatasetFormat.Medical => XtunerTemplates.System["medical"],
        DatasetFormat.Sql => XtunerTemplates.System["sql"],
        _ => null,
    };

    /// <summary>The fields a record of this format has (for messages).</summary>
    public static string Shape(DatasetFormat f) => f switch
    {
        DatasetFormat.Conversation => "{\"conversation\": [{\"input\", \"output\"}...]}",
        DatasetFormat.Alpaca or DatasetFormat.Medical => "{\"instruction\", \"input\", \"output\"}",
        DatasetFormat.Oasst1 => "{\"text\": \"### Human: ... ### Assistant: ...\"}",
        DatasetFormat.Colors => "{\"description\": \"Name: description\", \"color\"}",
        DatasetFormat.OpenAI => "{\"messages\": [{\"role\", \"content\"}...]}",
        DatasetFormat.Text => "{\"text\"}",
        DatasetFormat.Default or DatasetFormat.CrimeKgAssitant => "{\"input\", \"output\"}",
        DatasetFormat.AlpacaZh => "{\"instruction_zh\", \"input_zh\", \"output_zh\"}",
        DatasetFormat.Arxiv => "{\"abstract\", \"title\"}",
        DatasetFormat.CodeAlpaca => "{\"prompt\", \"completion\"}",
        DatasetFormat.TinyCodes => "{\"prompt\", \"response\"}",
        DatasetFormat.LawReference => "{\"question\", \"answer\"}",
        DatasetFormat.Sql => "{\"context\", \"question\", \"answer\"}",
        DatasetFormat.OpenOrca => "{\"system_prompt\", \"question\", \"response\"}",
        DatasetFormat.StackExchange => "{\"question\", \"response\"}",
        DatasetFormat.WizardLM => "{\"conversations\": [{\"from\", \"value\"}...]}",
        _ => f.ToString(),
    };

    /// <summary>
    /// Which format a record looks like from its keys (the first match, most specific first), or null. Used to say
    /// "looks like openai messages: set dataset_map_fn: openai_map_fn" instead of one error per record.
    /// </summary>
    public static (DatasetFormat Format, string Description)? Sniff(JsonElement r)
    {
        if (r.ValueKind != JsonValueKind.Object) return null;
        bool Has(string k) => r.TryGetProperty(k, out var v) && v.ValueKind != JsonValueKind.Undefined;
        bool Arr(string k) => r.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.Array;
        if (Arr("conversation")) return (DatasetFormat.Conversation, "XTuner conversations");
        if (Arr("messages")) return (DatasetFormat.OpenAI, "openai messages");
        if (Arr("conversations")) return (DatasetFormat.WizardLM, "ShareGPT conversations (from/value)");
        if (Has("chosen") && Has("rejected")) return null;   // preference pairs: no SFT map fn fits
        if (Has("instruction_zh") && Has("output_zh")) return (DatasetFormat.AlpacaZh, "alpaca_zh records");
        if (Has("instruction") && Has("output")) return (DatasetFormat.Alpaca, "alpaca records");
        if (Has("description") && Has("color")) return (DatasetFormat.Colors, "colorist records");
        if (Has("abstract") && Has("title")) return (DatasetFormat.Arxiv, "arxiv abstracts");
        if (Has("prompt") && Has("completion")) return (DatasetFormat.CodeAlpaca, "code_alpaca records");
        if (Has("prompt") && Has("response")) return (DatasetFormat.TinyCodes, "tiny_codes records");
        if (Has("system_prompt") && Has("question") && Has("response")) return (DatasetFormat.OpenOrca, "OpenOrca records");
        if (Has("question") && Has("response")) return (DatasetFormat.StackExchange, "stack_exchange records");
        if (Has("context") && Has("question") && Has("answer")) return (DatasetFormat.Sql, "sql records");
        if (Has("question") && Has("answer")) return (DatasetFormat.LawReference, "question/answer records");
        if (Has("input") && Has("output")) return (DatasetFormat.Default, "input/output records");
        if (r.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
            return t.GetString()!.Contains("### Human:", StringComparison.Ordinal)
                ? (DatasetFormat.Oasst1, "oasst1 dialogues") : (DatasetFormat.Text, "plain text");
        return null;
    }

    /// <summary>Maps one record; null = dropped as XTuner drops it (alpaca "&lt;nooutput&gt;"). Problems go to errors.</summary>
    public static Conversation? Map(RawRecord r, DatasetFormat format, List<DatasetError> errors)
    {
        var ctx = new Ctx(r.Location, errors);
        if (r.Value.ValueKind != JsonValueKind.Object)
        {
            ctx.Error("(record)", $"expected a JSON object, got {r.Value.ValueKind}");
            return null;
        }
        int before = errors.Count;
        var turns = format switch
        {
            DatasetFormat.Conversation => MapConversation(r.Value, ctx),
            DatasetFormat.Alpaca => MapAlpaca(r.Value, ctx),
            DatasetFormat.Oasst1 => MapOasst1(r.Value, ctx),
            DatasetFormat.Colors => MapColors(r.Value, ctx),
            DatasetFormat.OpenAI => MapOpenAI(r.Value, ctx),
            DatasetFormat.Text => ctx.Str(r.Value, "text", required: true) is { } text ? [new Turn(null, "", PyStrip(text), NeedEosToken: false)] : null,
            DatasetFormat.Default => Single(ctx, r.Value, null, "input", "output", systemField: "system"),
            DatasetFormat.AlpacaZh => Joined(ctx, r.Value, null, "instruction_zh", "input_zh", "output_zh"),
            DatasetFormat.Arxiv => Single(ctx, r.Value, System(format), "abstract", "title"),
            DatasetFormat.CodeAlpaca => Single(ctx, r.Value, System(format), "prompt", "completion"),
            DatasetFormat.TinyCodes => Single(ctx, r.Value, System(format), "prompt", "response"),
            DatasetFormat.CrimeKgAssitant => Single(ctx, r.Value, System(format), "input", "output"),
            DatasetFormat.LawReference => Single(ctx, r.Value, System(format), "question", "answer"),
            DatasetFormat.Medical => Joined(ctx, r.Value, System(format), "instruction", "input", "output"),
            DatasetFormat.Sql => Joined(ctx, r.Value, System(format), "context", "question", "answer"),
            DatasetFormat.OpenOrca => Single(ctx, r.Value, null, "question", "response", systemField: "system_prompt"),
            DatasetFormat.StackExchange => Single(ctx, r.Value, null, "question", "response"),
            DatasetFormat.WizardLM => MapWizardLM(r.Value, ctx),
            _ => throw new ArgumentOutOfRangeException(nameof(format)),
        };
        if (errors.Count > before || turns is null) return null;
        if (turns.Count == 0)
        {
            ctx.Error(format switch { DatasetFormat.OpenAI => "messages", DatasetFormat.Oasst1 => "text", DatasetFormat.WizardLM => "conversations", _ => "conversation" },
                "empty conversation (no complete input/output turn)");
            return null;
        }
        return new Conversation(turns, r.Location);
    }

    sealed class Ctx(string location, List<DatasetError> errors)
    {
        public void Error(string field, string message) => errors.Add(new DatasetError(location, field, message));

        // A string field; null/absent is allowed unless required.
        public string? Str(JsonElement obj, string field, bool required, string? path = null)
        {
            path ??= field;
            if (!obj.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
            {
                if (required) Error(path, "missing");
                return null;
            }
            if (v.ValueKind != JsonValueKind.String)
            {
                Error(path, $"expected a string, got {v.ValueKind}");
                return null;
            }
            return v.GetString();
        }

        // A required array field's items; null (with the error recorded) when it is absent or not an array.
        public List<JsonElement>? Items(JsonElement obj, string field)
        {
            if (obj.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.Array) return v.EnumerateArray().ToList();
            Error(field, v.ValueKind == JsonValueKind.Undefined ? "missing" : $"expected an array, got {v.ValueKind}");
            return null;
        }
    }

    static List<Turn>? MapConversation(JsonElement o, Ctx ctx)
    {
        if (!o.TryGetProperty("conversation", out var conv) || conv.ValueKind == JsonValueKind.Null)
        {
            ctx.Error("conversation", "missing");
            return null;
        }
        if (conv.ValueKind != JsonValueKind.Array)
        {
            ctx.Error("conversation", $"expected an array of turns, got {conv.ValueKind}");
            return null;
        }
        var turns = new List<Turn>();
        int i = 0;
        foreach (var t in conv.EnumerateArray())
        {
            string p = $"conversation[{i++}]";
            if (t.ValueKind != JsonValueKind.Object)
            {
                ctx.Error(p, $"expected an object, got {t.ValueKind}");
                continue;
            }
            bool withLoss = true;
            if (t.TryGetProperty("output_with_loss", out var wl))
            {
                if (wl.ValueKind is JsonValueKind.True or JsonValueKind.False) withLoss = wl.GetBoolean();
                else ctx.Error(p + ".output_with_loss", $"expected true or false, got {wl.ValueKind}");
            }
            turns.Add(new Turn(ctx.Str(t, "system", false, p + ".system"), ctx.Str(t, "input", false, p + ".input"),
                ctx.Str(t, "output", true, p + ".output"), withLoss));
        }
        return turns;
    }

    // One turn {system, input: record[input], output: record[output]} (default_map_fn and the SYSTEM_TEMPLATE ones).
    static List<Turn>? Single(Ctx ctx, JsonElement o, string? system, string input, string output, string? systemField = null)
    {
        string? i = ctx.Str(o, input, true), a = ctx.Str(o, output, true);
        if (systemField is not null) system = ctx.Str(o, systemField, false);
        return i is null || a is null ? null : [new Turn(system, i, a)];
    }

    // One turn whose input is "{first}\n{second}" (alpaca_zh, medical, sql).
    static List<Turn>? Joined(Ctx ctx, JsonElement o, string? system, string first, string second, string output)
    {
        string? a = ctx.Str(o, first, true), b = ctx.Str(o, second, false), c = ctx.Str(o, output, true);
        return a is null || c is null ? null : [new Turn(system, $"{a}\n{b ?? ""}", c)];
    }

    // wizardlm_map_fn: leading gpt turns skipped, human values concatenated until a gpt answer.
    static List<Turn>? MapWizardLM(JsonElement o, Ctx ctx)
    {
        if (ctx.Items(o, "conversations") is not { } list) return null;
        int skip = 0;
        while (skip < list.Count && list[skip].ValueKind == JsonValueKind.Object && ctx.Str(list[skip], "from", false) == "gpt") skip++;
        var turns = new List<Turn>();
        string input = "";
        for (int i = skip; i < list.Count; i++)
        {
            string p = $"conversations[{i}]";
            if (list[i].ValueKind != JsonValueKind.Object)
            {
                ctx.Error(p, $"expected an object, got {list[i].ValueKind}");
                continue;
            }
            string? from = ctx.Str(list[i], "from", true, p + ".from"), value = ctx.Str(list[i], "value", true, p + ".value");
            if (from is null || value is null) continue;
            if (from == "human") input += value;
            else if (from == "gpt")
            {
                turns.Add(new Turn(null, input, value));
                input = "";
            }
            else ctx.Error(p + ".from", $"unknown speaker '{from}' (human, gpt)");
        }
        return turns;
    }

    static List<Turn>? MapAlpaca(JsonElement o, Ctx ctx)
    {
        string? instruction = ctx.Str(o, "instruction", true), input = ctx.Str(o, "input", false), output = ctx.Str(o, "output", true);
        if (instruction is null || output is null) return null;
        if (output == "<nooutput>") return null;
        return [new Turn(null, $"{instruction}\n{input ?? ""}", output)];
    }

    static List<Turn>? MapOasst1(JsonElement o, Ctx ctx)
    {
        string? text = ctx.Str(o, "text", true);
        if (text is null) return null;
        var data = new List<string>();
        foreach (string raw in PyStrip(text).Split("###"))
        {
            string s = PyStrip(raw);
            if (s.StartsWith("Human:", StringComparison.Ordinal)) data.Add(PyStrip(s[6..]));
            else if (s.StartsWith("Assistant:", StringComparison.Ordinal)) data.Add(PyStrip(s[10..]));
        }
        if (data.Count % 2 == 1) data.RemoveAt(data.Count - 1);
        var turns = new List<Turn>();
        for (int i = 0; i < data.Count; i += 2) turns.Add(new Turn(null, data[i], data[i + 1]));
        return turns;
    }

    static List<Turn>? MapColors(JsonElement o, Ctx ctx)
    {
        string? desc = ctx.Str(o, "description", true), color = ctx.Str(o, "color", true);
        if (desc is null || color is null) return null;
        // ':'.join(description.split(':')[1:]).strip(): the text after the first ':' ("Sky Blue: a light blue" -> "a light blue").
        int colon = desc.IndexOf(':');
        string d = colon < 0 ? "" : PyStrip(desc[(colon + 1)..]);
        return [new Turn(XtunerTemplates.System["colorist"], d, color)];
    }

    static List<Turn>? MapOpenAI(JsonElement o, Ctx ctx)
    {
        if (ctx.Items(o, "messages") is not { } list) return null;
        int skip = 0;
        while (skip < list.Count && list[skip].ValueKind == JsonValueKind.Object && ctx.Str(list[skip], "role", false) == "assistant") skip++;
        var turns = new List<Turn>();
        string system = "", input = "";
        for (int i = skip; i < list.Count; i++)
        {
            string p = $"messages[{i}]";
            var m = list[i];
            if (m.ValueKind != JsonValueKind.Object)
            {
                ctx.Error(p, $"expected an object, got {m.ValueKind}");
                continue;
            }
            string? role = ctx.Str(m, "role", true, p + ".role"), content = ctx.Str(m, "content", true, p + ".content");
            if (role is null || content is null) continue;
            switch (role)
            {
                case "system": system = content; break;
                case "user": input += content; break;
                case "assistant":
                    turns.Add(new Turn(system, input, content, LossFlag(m)));
                    system = input = "";
                    break;
                default: ctx.Error(p + ".role", $"unknown role '{role}' (system, user, assistant)"); break;
            }
        }
        return turns;
    }

    // str(msg.get("loss", "True")).lower() == "true", with Python's str() of JSON values.
    static bool LossFlag(JsonElement m)
    {
        if (!m.TryGetProperty("loss", out var v)) return true;
        string s = v.ValueKind switch
        {
            JsonValueKind.True => "True",
            JsonValueKind.False => "False",
            JsonValueKind.String => v.GetString()!,
            JsonValueKind.Null => "None",
            _ => v.GetRawText(),
        };
        return s.Equals("true", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Python str.strip(): Unicode whitespace plus the separators U+001C..U+001F.</summary>
    public static string PyStrip(string s)
    {
        static bool Ws(char c) => char.IsWhiteSpace(c) || c is >= '\u001C' and <= '\u001F';
        int a = 0, b = s.Length;
        while (a < b && Ws(s[a])) a++;
        while (b > a && Ws(s[b - 1])) b--;
        return s[a..b];
    }
}
