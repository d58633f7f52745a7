// System.Text.Json metadata generated at compile time for what the dataset readers serialize: no reflection, so the
// readers also run in Native AOT apps (issue 15).
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace IlgpuTune.Data.Datasets;

[JsonSerializable(typeof(JsonNode))]
[JsonSerializable(typeof(JsonObject))]
[JsonSerializable(typeof(Dictionary<string, string>))]
internal sealed partial class DataJson : JsonSerializerContext;
