// Operations on lists of gradients, through the backend of the device they live on: the CPU references on the managed
// CPU path, the multi-tensor kernels (kernels/IlgpuTune.Kernels/AdamW.cs) on an accelerator.
using IlgpuTune.Core;
using IlgpuTune.Numerics;


namespace IlgpuTune.Training;

internal static class GradOps
{
    /// <summary>The F32 gradients of the parameters that have one, all on one device (torch skips grad-less params).</summary>
    public static List<Tensor> Collect(IEnumerable<Tensor> parameters)
    {
        var grads = new List<Tensor>();
        foreach (var p in parameters)
        {
            if (p.Grad is not { } g) continue;
            if (g.DType != DType.F32)
                throw new ArgumentException($"gradient of {p.Name ?? "a parameter"} is {g.DType}; trainable parameters and their grads must be F32");
            if (g.Length != p.Length)
                throw new ArgumentException($"gradient of {p.Name ?? "a parameter"} has {g.Length} elements, the parameter {p.Length}");
            if (grads.Count > 0 && !ReferenceEquals(grads[0].Device, g.Device))
                throw new ArgumentException($"gradient of {p.Name ?? "a parameter"} lives on another device than the first one");
            grads.Add(g);
        }
        return grads;
    }

    /// <summary>grads *= factor in place; true if any element was inf or NaN before scaling.</summary>
    public static bool MultiplyAndCheck(IReadOnlyList<Tensor> grads, float factor)
    {
        if (grads.Count == 0) return false;
        return grads[0].Device.Backend.UnscaleAndCheck(grads, factor);
    }

    /// <summary>sum(g^2) per gradient: fp32 within a tensor (as torch), the partial sums of a kernel added in double.</summary>
    public static double[] SumsOfSquares(IReadOnlyList<Tensor> grads)
    {
        return grads.Count == 0 ? [] : grads[0].Device.Backend.SumsOfSquares(grads);
    }
}
