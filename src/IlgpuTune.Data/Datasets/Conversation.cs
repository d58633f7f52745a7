namespace IlgpuTune.Data.Datasets;

/// <summary>
/// One XTuner conversation turn (the dict of example["conversation"]). Null = the key is absent; NeedEosToken and Sep are
/// what pretrain_map_fn sets (template_map_fn overrides both).
/// </summary>
public sealed record Turn(string? System, string? Input, string? Output, bool OutputWithLoss = true, bool? NeedEosToken = null,
    string? Sep = null);

/// <summary>A record after the dataset map fn; <see cref="Source"/> names its file:line or file row for error messages.</summary>
public sealed record Conversation(IReadOnlyList<Turn> Turns, string Source);

/// <summary>A turn after template_map_fn: the text pieces encode_fn tokenizes separately.</summary>
public sealed record TemplatedTurn(string Input, string Output, bool OutputWithLoss, bool NeedEosToken, string Sep);
