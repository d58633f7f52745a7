using System.Text.Json.Nodes;

namespace IlgpuTune.Model.Generation;

public static class GenerationConfig
{
    /// <summary>The ids that end generation: config.json's eos_token_id(s), generation_config.json's, and the tokenizer's eos_token.</summary>
    public static int[] EosTokenIds(string modelDir, ModelConfig config, int? tokenizerEos)
    {
        var ids = new SortedSet<int>(config.EosTokenIds);
        if (tokenizerEos is { } eos) ids.Add(eos);
        string file = Path.Combine(modelDir, "generation_config.json");
        if (File.Exists(file))
        {
            var node = JsonNode.Parse(File.ReadAllText(file))?["eos_token_id"];
            try
            {
                if (node is JsonArray a) ids.UnionWith(a.Select(n => n!.GetValue<int>()));
                else if (node is JsonValue v) ids.Add(v.GetValue<int>());
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
            {
                throw new InvalidDataException($"{file}: eos_token_id must be an integer or a list of integers", e);
            }
        }
        return [.. ids];
    }
}
