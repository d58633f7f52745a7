namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>t[:] = value (no autograd).</summary>
    public static void FillInPlace(Tensor t, float value)
    {
        RequireF32("fill", t, "t");
        B(t).Fill(t, value);
    }

    /// <summary>y += x (no autograd; gradient accumulation).</summary>
    public static void AccumulateInPlace(Tensor y, Tensor x)
    {
        RequireSameDevice("accumulate", y, x);
        if (x.Length != y.Length) throw new ArgumentException($"accumulate: {x.Length} elements into {y.Length}");
        B(y).Accumulate(x, y);
    }

    // a[...] + b[...] (same shape) -> y
    public static Tensor Add(Tensor a, Tensor b)
    {
        CheckSameShape("add", a, b);
        var y = AddNoGrad(a, b);
        if (Tape.IsRecording(a, b))
            Tape.Record("add", [a, b], [y], ctx =>
            {
                var g = ctx.GradOutput()!;
                if (ctx.NeedsGrad(0)) ctx.AddGrad(0, g.Alias());
                if (ctx.NeedsGrad(1)) ctx.AddGrad(1, g.Alias());
            });
        return y;
    }

    /// <summary>a + b without recording (used by the tape itself).</summary>
    internal static Tensor AddNoGrad(Tensor a, Tensor b)
    {
        var y = EmptyF32(a.Device, a.Shape);
        B(a).Add(a, b, y);
        return y;
    }

    // a[...] * b[...] (same shape) -> y; dA = dY*b, dB = dY*a
    public static Tensor Mul(Tensor a, Tensor b)
    {
        CheckSameShape("mul", a, b);
        var y = MulRaw(a, b);
        if (Tape.IsRecording(a, b))
        {
            var sa = a.Alias();
            var sb = b.Alias();
            Tape.Record("mul", [a, b], [y], ctx =>
            {
                var g = ctx.GradOutput()!;
                if (ctx.NeedsGrad(0)) ctx.AddGrad(0, MulRaw(g, sb));
                if (ctx.NeedsGrad(1)) ctx.AddGrad(1, MulRaw(g, sa));
            }, sa, sb);
        }
        return y;
    }

    private static Tensor MulRaw(Tensor a, Tensor b)
    {
        var y = EmptyF32(a.Device, a.Shape);
        B(a).Mul(a, b, y);
        return y;
    }

    // alpha * x -> y
    public static Tensor Scale(Tensor x, float alpha)
    {
        RequireF32("scale", x, "x");
        var y = ScaleRaw(x, alpha);
        if (Tape.IsRecording(x))
            Tape.Record("scale", [x], [y], ctx => ctx.AddGrad(0, ScaleRaw(ctx.GradOutput()!, alpha)));
        return y;
    }

    private static Tensor ScaleRaw(Tensor x, float alpha)
    {
        var y = EmptyF32(x.Device, x.Shape);
        B(x).Scale(x, alpha, y);
        return y;
    }

    /// <summary>Same data under a new shape; the gradient is reshaped back.</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        var y = x.Reshaped(shape);
        if (Tape.IsRecording(x))
        {
            var inShape = x.Shape;
            Tape.Record("reshape", [x], [y], ctx => ctx.AddGrad(0, ctx.GradOutput()!.Reshaped(inShape)));
        }
        return y;
    }

    /// <summary>x itself as a new tensor that autograd tracks (an op that changes nothing, e.g. dropout with p = 0).</summary>
    public static Tensor Identity(Tensor x) => Reshape(x, x.Shape);

    private static void CheckSameShape(string op, Tensor a, Tensor b)
    {
        RequireSameDevice(op, a, b);
        RequireF32(op, a, "a");
        RequireF32(op, b, "b");
        if (!a.Shape.SequenceEqual(b.Shape))
            throw new ArgumentException($"{op}: shapes {ShapeText(a.Shape)} and {ShapeText(b.Shape)} differ");
    }
}
