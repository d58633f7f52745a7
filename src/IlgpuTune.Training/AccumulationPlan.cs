// Gradient accumulation as mmengine's OptimWrapper does it (formats.md §6.4), for 0-based micro-batch k of maxIters:
//   loss used = loss / divisor, divisor = accumulative_counts, or maxIters % accumulative_counts for the iterations
//   of a last, partial window; the optimizer steps after k when (k + 1) % accumulative_counts == 0 or k + 1 == maxIters.
// Every micro-batch loss is a token mean, so a step's gradient is a mean of means (not token-weighted).
namespace IlgpuTune.Training;

public sealed class AccumulationPlan
{
    public AccumulationPlan(int maxIters, int accumulativeCounts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxIters, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(accumulativeCounts, 1);
        MaxIters = maxIters;
        AccumulativeCounts = accumulativeCounts;
    }

    public int MaxIters { get; }
    public int AccumulativeCounts { get; }

    /// <summary>Iterations in the last, partial window (0 when maxIters is a multiple of the window).</summary>
    public int Remainder => MaxIters % AccumulativeCounts;

    /// <summary>Optimizer steps in the whole run.</summary>
    public int OptimizerSteps => (MaxIters + AccumulativeCounts - 1) / AccumulativeCounts;

    /// <summary>What micro-batch <paramref name="iteration"/>'s loss is divided by before backward.</summary>
    public int LossDivisor(int iteration)
    {
        Check(iteration);
        return iteration < MaxIters - Remainder ? AccumulativeCounts : Remainder;
    }

    /// <summary>Whether the optimizer steps (and grads are cleared) after micro-batch <paramref name="iteration"/>.</summary>
    public bool EndsStep(int iteration)
    {
        Check(iteration);
        return (iteration + 1) % AccumulativeCounts == 0 || iteration + 1 == MaxIters;
    }

    private void Check(int iteration)
    {
        if (iteration < 0 || iteration >= MaxIters)
            throw new ArgumentOutOfRangeException(nameof(iteration), iteration, $"iterations run from 0 to {MaxIters - 1}");
    }
}
