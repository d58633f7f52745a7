// System.Text.Json metadata generated at compile time for adapter_config.json (PeftAdapter.Save): no reflection, so saving
// adapters also works in Native AOT apps (issue 15). Its values are these types.
using System.Text.Json.Serialization;

namespace IlgpuTune.Model;

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(SortedDictionary<string, object?>))]
[JsonSerializable(typeof(Dictionary<string, object>))]
[JsonSerializable(typeof(string[]))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(bool))]
[JsonSerializable(typeof(int))]
[JsonSerializable(typeof(float))]
[JsonSerializable(typeof(double))]
internal sealed partial class ModelJson : JsonSerializerContext;
