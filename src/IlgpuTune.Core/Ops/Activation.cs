namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>SiLU: x * sigmoid(x), elementwise.</summary>
    public static Tensor Silu(Tensor x)
    {
        RequireF32("silu", x, "x");
        var y = EmptyF32(x.Device, x.Shape);
        B(x).SiluForward(x, y);
        if (Tape.IsRecording(x))
        {
            var sx = x.Alias();
            Tape.Record("silu", [x], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dX = EmptyF32(dY.Device, sx.Shape);
                B(dY).SiluBackward(dY, sx, dX);
                ctx.AddGrad(0, dX);
            }, sx);
        }
        return y;
    }

    /// <summary>SwiGLU gate of LlamaMLP: silu(gate) * up, elementwise.</summary>
    public static Tensor SwiGlu(Tensor gate, Tensor up)
    {
        CheckSameShape("swiglu", gate, up);
        var y = EmptyF32(gate.Device, gate.Shape);
        B(gate).SwiGluForward(gate, up, y);
        if (Tape.IsRecording(gate, up))
        {
            var sg = gate.Alias();
            var su = up.Alias();
            Tape.Record("swiglu", [gate, up], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dGate = EmptyF32(dY.Device, sg.Shape);
                var dUp = EmptyF32(dY.Device, su.Shape);
                B(dY).SwiGluBackward(dY, sg, su, dGate, dUp);
                ctx.AddGrad(0, dGate);
                ctx.AddGrad(1, dUp);
            }, sg, su);
        }
        return y;
    }

    /// <summary>GeGLU gate of Gemma's MLP: gelu_pytorch_tanh(gate) * up, elementwise (gate, up, y [..., intermediate]).</summary>
    public static Tensor GeGlu(Tensor gate, Tensor up)
    {
        CheckSameShape("geglu", gate, up);
        var y = EmptyF32(gate.Device, gate.Shape);
        B(gate).GeGluForward(gate, up, y);
        if (Tape.IsRecording(gate, up))
        {
            var sg = gate.Alias();
            var su = up.Alias();
            Tape.Record("geglu", [gate, up], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dGate = EmptyF32(dY.Device, sg.Shape);
                var dUp = EmptyF32(dY.Device, su.Shape);
                B(dY).GeGluBackward(dY, sg, su, dGate, dUp);
                ctx.AddGrad(0, dGate);
                ctx.AddGrad(1, dUp);
            }, sg, su);
        }
        return y;
    }
}
