// Operations on lists of gradients, on whichever device they live: the CPU references on the managed CPU path, the
// multi-tensor kernels (kernels/IlgpuTune.Kernels/AdamW.cs) on an accelerator.
using ILGPU.Runtime;
using IlgpuTune.Core;
using IlgpuTune.Numerics;
using AdamWKernels = IlgpuTune.Kernels.AdamW;

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
        var device = grads[0].Device;
        if (device.IsCpu)
        {
            bool found = false;
            foreach (var g in grads) found |= AdamWKernels.UnscaleCpu(g.F32, factor);
            return found;
        }
        using var flag = Tensor.Zeros(device, DType.F32, 1);
        AdamWKernels.Unscale(device.RequireKernels(), grads.Select(g => g.F32View).ToList(), factor, flag.F32View);
        return flag.Item() != 0f;
    }

    /// <summary>sum(g^2) per gradient: fp32 within a tensor (as torch), the partial sums of a kernel added in double.</summary>
    public static double[] SumsOfSquares(IReadOnlyList<Tensor> grads)
    {
        var sums = new double[grads.Count];
        if (grads.Count == 0) return sums;
        var device = grads[0].Device;
        if (device.IsCpu)
        {
            for (int i = 0; i < grads.Count; i++) sums[i] = AdamWKernels.SumOfSquaresCpu<float>(grads[i].F32);
            return sums;
        }
        var k = device.RequireKernels();
        int per = AdamWKernels.PartialsPerTensor(k);
        using var partials = Tensor.Empty(device, DType.F32, grads.Count * per);
        AdamWKernels.SumOfSquares(k, grads.Select(g => g.F32View).ToList(), partials.F32View);
        var host = partials.ToFloatArray();
        for (int i = 0; i < grads.Count; i++)
            for (int j = 0; j < per; j++) sums[i] += host[i * per + j];
        return sums;
    }
}
