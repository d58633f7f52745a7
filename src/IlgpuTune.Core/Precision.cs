// The one spelling of compute precision: which element type linear-layer products (and flash attention) take their
// inputs in. Everything else (activations, norms, softmax, loss, parameter updates) stays fp32 in every mode.
// The mapping from config strings and to the kernels' HalfType lives here and nowhere else.
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public sealed class Precision
{
    private Precision(DType matmul) => Matmul = matmul;

    /// <summary>fp32 inputs and accumulation (the reference kernels).</summary>
    public static Precision F32 { get; } = new(DType.F32);

    /// <summary>Inputs rounded to bf16, fp32 accumulation, on tensor cores: torch's bf16 autocast for matmuls.</summary>
    public static Precision BF16 { get; } = new(DType.BF16);

    /// <summary>Inputs rounded to fp16, fp32 accumulation, on tensor cores: torch's fp16 autocast (use with loss scaling).</summary>
    public static Precision F16 { get; } = new(DType.F16);

    /// <summary>Element type of matmul inputs: F32, BF16 or F16.</summary>
    public DType Matmul { get; }

    /// <summary>True for the 16-bit (tensor-core) modes.</summary>
    public bool IsHalf => Matmul != DType.F32;

    /// <summary>The kernels' name of the 16-bit type (BF16 or F16 precision only).</summary>
    public HalfType Half => HalfOf(Matmul);

    public static Precision Of(DType matmul) => matmul switch
    {
        DType.F32 => F32,
        DType.BF16 => BF16,
        DType.F16 => F16,
        _ => throw new ArgumentException($"no matmul precision {matmul}: F32, BF16 or F16"),
    };

    /// <summary>A config's dtype string ("bfloat16", "float16", anything else fp32), as XTuner configs spell it.</summary>
    public static Precision FromConfig(string? dtype) => dtype switch { "bfloat16" => BF16, "float16" => F16, _ => F32 };

    /// <summary>The kernels' HalfType of a 16-bit tensor element type.</summary>
    public static HalfType HalfOf(DType dtype) => dtype switch
    {
        DType.BF16 => HalfType.BFloat16,
        DType.F16 => HalfType.Float16,
        _ => throw new ArgumentException($"{dtype} is not a 16-bit float type"),
    };

    public override string ToString() => Matmul.ToString();
}
