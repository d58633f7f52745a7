namespace IlgpuTune.Numerics;

/// <summary>Element types a tensor can hold. bf16 and f16 are stored as their 16-bit patterns.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    I32,
    U8,
}

public static class DTypeInfo
{
    public static int Size(this DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.U8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>The safetensors dtype string (formats.md §1.2).</summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.I32 => "I32",
        DType.U8 => "U8",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static DType? FromSafetensorsName(string s) => s switch
    {
        "F32" => DType.F32,
        "F16" => DType.F16,
        "BF16" => DType.BF16,
        "I32" => DType.I32,
        "U8" => DType.U8,
        _ => null,
    };

    /// <summary>Parses a torch/HF dtype name ("float32", "bfloat16", "torch.float16", ...).</summary>
    public static DType? FromTorchName(string? s) => s?.Replace("torch.", "") switch
    {
        "float32" or "float" => DType.F32,
        "float16" or "half" => DType.F16,
        "bfloat16" => DType.BF16,
        _ => null,
    };
}
