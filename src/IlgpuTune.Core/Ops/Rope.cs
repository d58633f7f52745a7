namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// Rotary embedding (HF rotate_half): x[tokens, heads*headDim] with cos/sin[tokens, headDim/2] (constants) -> y, same shape.
    /// Backward is the transposed rotation.
    /// </summary>
    public static Tensor Rope(Tensor x, Tensor cos, Tensor sin, int heads, int headDim)
    {
        const string op = "rope";
        RequireF32(op, x, "x");
        int tokens = (int)(x.Length / ((long)heads * headDim));
        if ((long)tokens * heads * headDim != x.Length || cos.Length != (long)tokens * (headDim / 2) || sin.Length != cos.Length)
            throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} with {heads} heads of {headDim} does not fit cos {ShapeText(cos.Shape)}");
        var y = EmptyF32(x.Device, x.Shape);
        B(x).RopeForward(x, cos, sin, heads, headDim, y);
        if (Tape.IsRecording(x))
        {
            var sc = cos.Alias();
            var ss = sin.Alias();
            Tape.Record(op, [x], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dX = EmptyF32(dY.Device, dY.Shape);
                B(dY).RopeBackward(dY, sc, ss, heads, headDim, dX);
                ctx.AddGrad(0, dX);
            }, sc, ss);
        }
        return y;
    }
}
