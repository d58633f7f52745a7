using IlgpuTune.Kernels;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>SiLU: x * sigmoid(x), elementwise.</summary>
    public static Tensor Silu(Tensor x)
    {
        RequireF32("silu", x, "x");
        var y = EmptyF32(x.Device, x.Shape);
        if (x.Device.IsCpu) Activation.SiluForwardCpu<float>(x.F32, y.F32);
        else Activation.SiluForward(K(x), x.F32View, (int)x.Length, y.F32View);
        if (Tape.IsRecording(x))
        {
            var sx = x.Alias();
            Tape.Record("silu", [x], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dX = EmptyF32(dY.Device, sx.Shape);
                if (dY.Device.IsCpu) Activation.SiluBackwardCpu<float>(dY.F32, sx.F32, dX.F32);
                else Activation.SiluBackward(K(dY), dY.F32View, sx.F32View, (int)sx.Length, dX.F32View);
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
        if (gate.Device.IsCpu) Activation.SwiGluForwardCpu<float>(gate.F32, up.F32, y.F32);
        else Activation.SwiGluForward(K(gate), gate.F32View, up.F32View, (int)gate.Length, y.F32View);
        if (Tape.IsRecording(gate, up))
        {
            var sg = gate.Alias();
            var su = up.Alias();
            Tape.Record("swiglu", [gate, up], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dGate = EmptyF32(dY.Device, sg.Shape);
                var dUp = EmptyF32(dY.Device, su.Shape);
                if (dY.Device.IsCpu) Activation.SwiGluBackwardCpu<float>(dY.F32, sg.F32, su.F32, dGate.F32, dUp.F32);
                else Activation.SwiGluBackward(K(dY), dY.F32View, sg.F32View, su.F32View, (int)sg.Length, dGate.F32View, dUp.F32View);
                ctx.AddGrad(0, dGate);
                ctx.AddGrad(1, dUp);
            }, sg, su);
        }
        return y;
    }
}
