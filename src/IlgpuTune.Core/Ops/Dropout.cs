namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// Inverted dropout: y = x * mask / (1 - p). The mask is a function of one seed drawn from <paramref name="rng"/> and
    /// the element index (Kernels.Dropout), so it is made where x lives, is identical on every device, and backward
    /// recomputes it instead of keeping it. p = 0 returns x unchanged (as a tracked identity).
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, Random rng)
    {
        if (p < 0 || p >= 1) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1)");
        if (p == 0) return Identity(x);
        RequireF32("dropout", x, "x");
        ulong seed = (ulong)rng.NextInt64();
        var y = DropoutRaw(x, p, seed);
        if (Tape.IsRecording(x)) Tape.Record("dropout", [x], [y], ctx => ctx.AddGrad(0, DropoutRaw(ctx.GradOutput()!, p, seed)));
        return y;
    }

    private static Tensor DropoutRaw(Tensor x, float p, ulong seed)
    {
        var y = EmptyF32(x.Device, x.Shape);
        B(x).Dropout(x, p, seed, y);
        return y;
    }
}
