using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// Checked reads of tokenizer.json / tokenizer_config.json fields: a missing key, a wrong kind or an id out of range is a
/// FormatException naming the key, which the loader turns into one InvalidDataException naming the file.
/// </summary>
static class JsonFields
{
    /// <summary>Ids above this are refused: no vocabulary comes near it, and the id → token table is dense.</summary>
    public const int MaxId = (1 << 24) - 1;

    public static JsonElement Prop(this JsonElement e, string name) =>
        e.ValueKind != JsonValueKind.Object ? throw new FormatException($"expected an object with \"{name}\", got {Short(e)}")
        : e.TryGetProperty(name, out var v) ? v : throw new FormatException($"missing \"{name}\" in {Short(e)}");

    public static string Str(this JsonElement e, string name) => e.Prop(name).AsString(name);

    public static string AsString(this JsonElement v, string what) =>
        v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new FormatException($"\"{what}\" must be a string, got {Short(v)}");

    /// <summary>The first character of a one-character setting such as Metaspace's replacement.</summary>
    public static char AsChar(this JsonElement v, string what) =>
        v.AsString(what) is { Length: > 0 } s ? s[0] : throw new FormatException($"\"{what}\" must not be empty");

    public static int AsId(this JsonElement v, string what) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) && id is >= 0 and <= MaxId ? id
        : throw new FormatException($"{what}: {Short(v)} is not a token id (an integer from 0 to {MaxId})");

    public static int AsInt(this JsonElement v, string what) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw new FormatException($"\"{what}\" must be a 32-bit integer, got {Short(v)}");

    public static JsonElement.ArrayEnumerator Array(this JsonElement v, string what) =>
        v.ValueKind == JsonValueKind.Array ? v.EnumerateArray() : throw new FormatException($"\"{what}\" must be a list, got {Short(v)}");

    public static JsonElement.ObjectEnumerator Object(this JsonElement v, string what) =>
        v.ValueKind == JsonValueKind.Object ? v.EnumerateObject() : throw new FormatException($"\"{what}\" must be an object, got {Short(v)}");

    public static string Short(JsonElement e)
    {
        string raw = e.GetRawText();
        return raw.Length <= 60 ? raw : raw[..40] + "…" + raw[^10..];
    }
}
