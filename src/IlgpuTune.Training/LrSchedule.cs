// XTuner's learning-rate schedule (formats.md §6.5): mmengine LinearLR warmup then CosineAnnealingLR, both converted to
// iterations and stepped after every micro-batch. With W warmup iterations and T = max_epochs * L in all
// (L = micro-batches per epoch), iteration k (0-based) uses
//   k <  W: base * (s + (1 - s) * k / (W - 1))                         s = start_factor = 1e-5 (W = 1: base * s)
//   k >= W: eta_min + (base - eta_min) * (1 + cos(pi * (k - W) / (T - W))) / 2
// and k >= T keeps the last value (no scheduler is active then). W = 0 means no warmup; mmengine itself refuses an
// empty LinearLR window, so XTuner would fail there instead.
namespace IlgpuTune.Training;

public sealed class LrSchedule
{
    public LrSchedule(double baseLr, int warmupIters, int totalIters, double startFactor = 1e-5, double etaMin = 0.0)
    {
        if (totalIters <= 0) throw new ArgumentOutOfRangeException(nameof(totalIters), totalIters, "the schedule needs at least one iteration");
        if (warmupIters < 0 || warmupIters > totalIters)
            throw new ArgumentOutOfRangeException(nameof(warmupIters), warmupIters, $"warmup must lie in [0, {totalIters}]");
        BaseLr = baseLr;
        WarmupIters = warmupIters;
        TotalIters = totalIters;
        StartFactor = startFactor;
        EtaMin = etaMin;
    }

    /// <summary>
    /// XTuner's config: LinearLR(end = warmup_ratio * max_epochs), CosineAnnealingLR(begin = that, end = max_epochs), both
    /// by epoch and converted with int(x * L): W = int(warmup_ratio * max_epochs * L), T = int(max_epochs * L).
    /// </summary>
    public static LrSchedule Xtuner(double baseLr, double warmupRatio, int maxEpochs, int itersPerEpoch) =>
        new(baseLr, (int)(warmupRatio * maxEpochs * itersPerEpoch), checked(maxEpochs * itersPerEpoch));

    public double BaseLr { get; }
    public int WarmupIters { get; }
    public int TotalIters { get; }
    public double StartFactor { get; }
    public double EtaMin { get; }

    /// <summary>The lr of 0-based micro-batch <paramref name="iteration"/> (the optimizer step ending there uses it).</summary>
    public double LrAt(int iteration)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(iteration);
        int k = Math.Min(iteration, TotalIters - 1);
        if (k < WarmupIters)
            return WarmupIters == 1 ? BaseLr * StartFactor : BaseLr * (StartFactor + (1 - StartFactor) * k / (WarmupIters - 1));
        return EtaMin + (BaseLr - EtaMin) * (1 + Math.Cos(Math.PI * (k - WarmupIters) / (TotalIters - WarmupIters))) / 2;
    }
}
