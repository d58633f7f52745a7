// torch.nn.utils.clip_grad_norm_ with norm_type 2 and error_if_nonfinite False, as XTuner uses it (formats.md §6.3):
//   norm_i = ||g_i||_2 per tensor (fp32), total = ||(norm_1, ..., norm_n)||_2 (fp32 result),
//   coef = min(float(1/(total + 1e-6)) * max_norm, 1)   (torch evaluates max_norm / t as t.reciprocal() * max_norm)
//   every grad *= coef, even when coef is 1. Returns total, the norm before clipping; inf/NaN just propagate.
using IlgpuTune.Core;

namespace IlgpuTune.Training;

public static class GradClipping
{
    /// <summary>Clips the gradients of <paramref name="parameters"/> in place; returns their total norm before clipping.</summary>
    public static float ClipGradNorm(IEnumerable<Tensor> parameters, float maxNorm)
    {
        var grads = GradOps.Collect(parameters);
        if (grads.Count == 0) return 0f;
        float total = TotalNorm(grads);
        float coef = MathF.Min(1f / (total + 1e-6f) * maxNorm, 1f);
        GradOps.MultiplyAndCheck(grads, coef); // the same in-place multiply as unscaling; the non-finite flag is not needed
        return total;
    }

    /// <summary>The global L2 norm of the gradients of <paramref name="parameters"/> (0 when none has one).</summary>
    public static float GradNorm(IEnumerable<Tensor> parameters)
    {
        var grads = GradOps.Collect(parameters);
        return grads.Count == 0 ? 0f : TotalNorm(grads);
    }

    private static float TotalNorm(List<Tensor> grads)
    {
        double sum = 0;
        foreach (var s in GradOps.SumsOfSquares(grads))
        {
            double norm = (float)Math.Sqrt(s); // torch's per-tensor norm is an fp32 tensor
            sum += norm * norm;
        }
        return (float)Math.Sqrt(sum);
    }
}
