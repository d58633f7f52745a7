namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// Inverted dropout: y = x * mask / (1 - p) with a mask drawn from <paramref name="rng"/> on the host (seeded and
    /// identical on every device). p = 0 returns x unchanged (as a tracked identity).
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, Random rng)
    {
        if (p < 0 || p >= 1) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1)");
        if (p == 0) return Identity(x);
        var mask = new float[x.Length];
        float keep = 1f / (1f - p);
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < p ? 0f : keep;
        using var m = Tensor.FromArray(x.Device, mask, x.Shape);
        return Mul(x, m);
    }
}
