// System.Text.Json metadata generated at compile time for what the trainer writes and reads (scalars log, scaler state,
// batch dumps): no reflection, so training also runs in Native AOT apps (issue 15).
using System.Text.Json.Serialization;

namespace IlgpuTune.Training;

[JsonSerializable(typeof(Dictionary<string, object?>))]
[JsonSerializable(typeof(double))]
[JsonSerializable(typeof(int))]
[JsonSerializable(typeof(GradScalerState))]
[JsonSerializable(typeof(BatchDump))]
[JsonSerializable(typeof(Preference.PreferenceObjective.ReferenceLogps))]
internal sealed partial class TrainingJson : JsonSerializerContext;

/// <summary>One line of batches.jsonl (dump_batches).</summary>
internal sealed record BatchDump(int iter, int Size, int Length, int[] input_ids, int[] labels, int[] position_ids, int[] segment_ids);
