using System.Text.Json;
using IlgpuTune.Data.Templates;

namespace IlgpuTune.Data.Datasets;

/// <summary>The dataset_map_fn of an XTuner config.</summary>
public enum DatasetFormat
{
    /// <summary>Already {"conversation": [{"system","input","output","output_with_loss"}...]} (dataset_map_fn=None).</summary>
    Conversation,
    /// <summary>alpaca_map_fn: {"instruction","input","output"}.</summary>
    Alpaca,
    /// <summary>oasst1_map_fn: {"text": "### Human: ... ### Assistant: ..."}.</summary>
    Oasst1,
    /// <summary>colors_map_fn: {"description","color"} with SYSTEM_TEMPLATE.colorist.</summary>
    Colors,
    /// <summary>openai_map_fn: {"messages": [{"role","content","loss"?}...]}.</summary>
    OpenAI,
    /// <summary>pretrain_map_fn: {"text"} for incremental pre-training (no EOS appended).</summary>
    Text,
}

/// <summary>XTuner's dataset map fns (v0.2.0), with every missing field or wrong type reported instead of a KeyError.</summary>
public static class DatasetMapFns
{
    public static DatasetFormat Parse(string name) => name.ToLowerInvariant().Replace("_map_fn", "") switch
    {
        "conversation" or "default" or "none" => DatasetFormat.Conversation,
        "alpaca" => DatasetFormat.Alpaca,
        "oasst1" => DatasetFormat.Oasst1,
        "colors" or "colorist" => DatasetFormat.Colors,
        "openai" or "messages" => DatasetFormat.OpenAI,
        "text" or "pretrain" => DatasetFormat.Text,
        _ => throw new ArgumentException($"unknown dataset format '{name}' (conversation, alpaca, oasst1, colors, openai, text)"),
    };

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
            DatasetFormat.Text => [new Turn(null, "", PyStrip(ctx.Str(r.Value, "text", required: true) ?? ""), NeedEosToken: false)],
            _ => throw new ArgumentOutOfRangeException(nameof(format)),
        };
        if (errors.Count > before || turns is null) return null;
        if (turns.Count == 0)
        {
            ctx.Error(format == DatasetFormat.OpenAI ? "messages" : format == DatasetFormat.Oasst1 ? "text" : "conversation",
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
        int colon = desc.IndexOf(':');
        string d = colon < 0 ? "" : PyStrip(desc[(colon + 1)..]);
        return [new Turn(XtunerTemplates.System["colorist"], d, color)];
    }

    static List<Turn>? MapOpenAI(JsonElement o, Ctx ctx)
    {
        if (!o.TryGetProperty("messages", out var msgs) || msgs.ValueKind != JsonValueKind.Array)
        {
            ctx.Error("messages", msgs.ValueKind == JsonValueKind.Undefined ? "missing" : $"expected an array, got {msgs.ValueKind}");
            return null;
        }
        var list = msgs.EnumerateArray().ToList();
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
