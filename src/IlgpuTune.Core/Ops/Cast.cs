using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>Converts between F32 and BF16/F16 (round to nearest even). The gradient is cast back to the input's dtype.</summary>
    public static Tensor Cast(Tensor x, DType to)
    {
        if (x.DType == to) return Identity(x);
        var y = CastRaw(x, to);
        if (Tape.IsRecording(x))
        {
            var from = x.DType;
            Tape.Record("cast", [x], [y], ctx => ctx.AddGrad(0, CastRaw(ctx.GradOutput()!, from)));
        }
        return y;
    }

    /// <summary>
    /// x rounded to the values of a 16-bit type (bf16/f16, nearest even) and kept in F32; the gradient passes straight
    /// through. Makes a tensor exactly storable in 16 bits (see Tape.Checkpoint's storeFirstAs).
    /// </summary>
    public static Tensor RoundTo(Tensor x, DType half)
    {
        RequireF32("round_to", x, "x");
        if (half is not (DType.BF16 or DType.F16)) throw new ArgumentException($"round_to: {half} is not a 16-bit type");
        Tensor y;
        using (var h = CastRaw(x, half)) y = CastRaw(h, DType.F32);
        if (Tape.IsRecording(x)) Tape.Record("round_to", [x], [y], ctx => ctx.AddGrad(0, ctx.GradOutput()!.Alias()));
        return y;
    }

    internal static Tensor CastRaw(Tensor x, DType to)
    {
        if (!((x.DType == DType.F32 && to is DType.BF16 or DType.F16) || (x.DType is DType.BF16 or DType.F16 && to == DType.F32)))
            throw new NotSupportedException($"cast: {x.DType} -> {to} (go through F32)");
        var y = Tensor.Empty(x.Device, to, x.Shape);
        B(x).Cast(x, y);
        return y;
    }
}
