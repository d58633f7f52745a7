using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>What the pipeline needs from tokenizer_config.json (and chat_template.jinja, which wins when present).</summary>
public sealed record TokenizerConfig
{
    public string? TokenizerClass { get; init; }
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? PadToken { get; init; }
    public string? UnkToken { get; init; }
    public bool? AddBosToken { get; init; }
    public bool? AddEosToken { get; init; }
    /// <summary>The default chat template (Jinja source), if any.</summary>
    public string? ChatTemplate { get; init; }
    /// <summary>Where the chat templates came from (a tokenizer_config.json or chat_template.jinja path), for messages.</summary>
    public string? ChatTemplateSource { get; init; }
    /// <summary>All named templates when tokenizer_config holds a list of {name, template}.</summary>
    public IReadOnlyDictionary<string, string> NamedChatTemplates { get; init; } = new Dictionary<string, string>();
    /// <summary>"added_tokens_decoder" (id → token): the special tokens a SentencePiece .model tokenizer must match itself.</summary>
    public IReadOnlyList<AddedToken> AddedTokensDecoder { get; init; } = [];

    public static readonly TokenizerConfig Empty = new();

    public static TokenizerConfig Load(string dir)
    {
        string path = Path.Combine(dir, "tokenizer_config.json");
        var cfg = File.Exists(path) ? Parse(File.ReadAllText(path), path) with { ChatTemplateSource = path } : Empty;
        string jinja = Path.Combine(dir, "chat_template.jinja");
        return File.Exists(jinja) ? cfg with { ChatTemplate = File.ReadAllText(jinja), ChatTemplateSource = jinja } : cfg;
    }

    /// <summary>Parses tokenizer_config.json; anything malformed is an InvalidDataException naming <paramref name="source"/>.</summary>
    public static TokenizerConfig Parse(string json, string source = "tokenizer_config.json")
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            return Parse(doc.RootElement);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{source}: {e.Message}", e);
        }
    }

    static TokenizerConfig Parse(JsonElement r)
    {
        if (r.ValueKind != JsonValueKind.Object) throw new FormatException($"expected a JSON object, got {JsonFields.Short(r)}");
        var named = new Dictionary<string, string>();
        string? template = null;
        if (r.TryGetProperty("chat_template", out var ct))
        {
            if (ct.ValueKind == JsonValueKind.String) template = ct.GetString();
            else if (ct.ValueKind == JsonValueKind.Array)
            {
                foreach (var t in ct.EnumerateArray()) named[t.Str("name")] = t.Str("template");
                named.TryGetValue("default", out template);
            }
        }
        return new TokenizerConfig
        {
            TokenizerClass = Str(r, "tokenizer_class"),
            BosToken = TokenString(r, "bos_token"),
            EosToken = TokenString(r, "eos_token"),
            PadToken = TokenString(r, "pad_token"),
            UnkToken = TokenString(r, "unk_token"),
            AddBosToken = r.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False ? ab.GetBoolean() : null,
            AddEosToken = r.TryGetProperty("add_eos_token", out var ae) && ae.ValueKind is JsonValueKind.True or JsonValueKind.False ? ae.GetBoolean() : null,
            ChatTemplate = template,
            NamedChatTemplates = named,
            AddedTokensDecoder = r.TryGetProperty("added_tokens_decoder", out var atd) && atd.ValueKind == JsonValueKind.Object
                ? atd.EnumerateObject().Select(p => new AddedToken(AddedTokenId(p.Name),
                    p.Value.Str("content"), TextNormalizer.Bool(p.Value, "special", false),
                    TextNormalizer.Bool(p.Value, "single_word", false), TextNormalizer.Bool(p.Value, "lstrip", false),
                    TextNormalizer.Bool(p.Value, "rstrip", false), TextNormalizer.Bool(p.Value, "normalized", false))).ToList()
                : [],
        };
    }

    // added_tokens_decoder keys are ids written as strings ("151643").
    static int AddedTokenId(string key) =>
        int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) && id <= JsonFields.MaxId
            ? id : throw new FormatException($"added_tokens_decoder key '{(key.Length > 40 ? key[..40] + "…" : key)}' is not a token id (an integer from 0 to {JsonFields.MaxId})");

    static string? Str(JsonElement r, string name) =>
        r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    // A special token is a string, null, or the old {"__type": "AddedToken", "content": ...} object.
    static string? TokenString(JsonElement r, string name)
    {
        if (!r.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) => c.GetString(),
            _ => null,
        };
    }
}
