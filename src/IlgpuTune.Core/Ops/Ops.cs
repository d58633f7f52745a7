// Differentiable ops: each validates shapes, allocates outputs, calls its device's backend (Backends/IOpBackend.cs: the
// CPU references on the managed CPU device, the ILGPU kernels on CUDA / the ILGPU CPU accelerator), and records a tape
// entry whose closure runs the backward through the backend too. Kernels and their CPU references live in
// kernels/IlgpuTune.Kernels/<Op>.cs; the glue for op X lives in Ops/X.cs. Glue never asks which device it runs on.
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    private static IOpBackend B(Tensor t) => t.Device.Backend;

    private static Tensor EmptyF32(Device device, params int[] shape) => Tensor.Empty(device, DType.F32, shape);

    private static void RequireF32(string op, Tensor t, string role)
    {
        if (t.DType != DType.F32)
            throw new ArgumentException($"{op}: {role} ({t.Name ?? "tensor"}) must be F32, is {t.DType}; cast it first");
    }

    private static void RequireSameDevice(string op, Tensor a, Tensor b)
    {
        if (!ReferenceEquals(a.Device, b.Device)) throw new ArgumentException($"{op}: tensors live on different devices");
    }

    private static string ShapeText(int[] shape) => $"[{string.Join(", ", shape)}]";

    /// <summary>Shape with the last dimension replaced.</summary>
    private static int[] WithLast(int[] shape, int last)
    {
        var s = (int[])shape.Clone();
        s[^1] = last;
        return s;
    }
}
