using System.Text.Json.Nodes;

namespace IlgpuTune.Model.Generation;

public static class GenerationConfig
{
    /// <summary>
    /// The ids that end generation, as transformers' generate picks them: generation_config.json's eos_token_id (an
    /// integer or a list) when the file sets it, else config.json's, else the tokenizer's eos_token.
    /// </summary>
    public static int[] EosTokenIds(string modelDir, ModelConfig config, int? tokenizerEos)
    {
        string file = Path.Combine(modelDir, "generation_config.json");
        if (File.Exists(file))
        {
            JsonNode? node;
            try
            {
                node = (JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new InvalidDataException($"{file}: expected a JSON object"))["eos_token_id"];
            }
            catch (System.Text.Json.JsonException e)
            {
                throw new InvalidDataException($"{file}: not valid JSON ({e.Message})", e);
            }
            try
            {
                if (node is JsonArray a && a.Count > 0) return [.. a.Select(n => n!.GetValue<int>()).Distinct()];
                if (node is JsonValue v) return [v.GetValue<int>()];
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
            {
                throw new InvalidDataException($"{file}: eos_token_id must be an integer or a list of integers", e);
            }
        }
        if (config.EosTokenIds.Count > 0) return [.. config.EosTokenIds.Distinct()];
        return tokenizerEos is { } eos ? [eos] : [];
    }

    /// <summary>
    /// The most positions generation may reach: config.json's max_position_embeddings, unless dynamic NTK rope scaling
    /// is there to stretch the model past it (null: no limit).
    /// </summary>
    public static int? MaxPositions(ModelConfig config) => config.RopeScaling.Type == "dynamic" ? null : config.MaxPositionEmbeddings;
}
