using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace IlgpuTune.Training.Tests;

public class ScheduleTests
{
    [Fact]
    public void LrAt_FollowsLinearWarmupThenCosine()
    {
        // base 2e-4, W = 4, T = 12: warmup k/(W-1) = 0, 1/3, 2/3, 1; cosine over T - W = 8 iterations.
        var s = new LrSchedule(2e-4, 4, 12);
        const double b = 2e-4, f = 1e-5;
        Assert.Equal(b * f, s.LrAt(0), 1e-20);
        Assert.Equal(b * (f + (1 - f) / 3), s.LrAt(1), 1e-20);
        Assert.Equal(b * (f + (1 - f) * 2 / 3), s.LrAt(2), 1e-20);
        Assert.Equal(b, s.LrAt(3), 1e-20);
        Assert.Equal(b, s.LrAt(4), 1e-20);                                 // cos(0) = 1
        Assert.Equal(b * (1 + Math.Cos(Math.PI / 8)) / 2, s.LrAt(5), 1e-20);
        Assert.Equal(b / 2, s.LrAt(8), 1e-19);                             // cos(pi/2) = 0: halfway
        Assert.Equal(b * (1 + Math.Cos(Math.PI * 7 / 8)) / 2, s.LrAt(11), 1e-20);
        Assert.Equal(s.LrAt(11), s.LrAt(12));                              // past the end the last value stays
        Assert.Equal(s.LrAt(11), s.LrAt(1000));
    }

    [Fact]
    public void LrAt_WithoutWarmup_StartsTheCosineAtTheBase()
    {
        var s = new LrSchedule(1e-3, 0, 5);
        Assert.Equal(1e-3, s.LrAt(0));
        Assert.Equal(1e-3 * (1 + Math.Cos(Math.PI * 3 / 5)) / 2, s.LrAt(3), 1e-20);
    }

    [Fact]
    public void LrAt_OneWarmupIteration_IsStartFactorThenCosine()
    {
        // mmengine's LinearLR with total_iters = W - 1 = 0 returns base * start_factor at its only step.
        var s = new LrSchedule(1e-3, 1, 5);
        Assert.Equal(1e-3 * 1e-5, s.LrAt(0), 1e-22);
        Assert.Equal(1e-3, s.LrAt(1));
        Assert.Equal(1e-3 * (1 + Math.Cos(Math.PI / 4)) / 2, s.LrAt(2), 1e-20);
    }

    [Theory]
    [InlineData(0.03, 3, 100, 9, 300)]    // int(0.09 * 100)
    [InlineData(0.03, 1, 50, 1, 50)]      // int(1.5)
    [InlineData(0.03, 3, 10, 0, 30)]      // int(0.9): no warmup
    [InlineData(0.1, 2, 1001, 200, 2002)] // int(200.2)
    public void Xtuner_ConvertsEpochsToIterationsWithInt(double ratio, int epochs, int perEpoch, int w, int t)
    {
        var s = LrSchedule.Xtuner(2e-4, ratio, epochs, perEpoch);
        Assert.Equal(w, s.WarmupIters);
        Assert.Equal(t, s.TotalIters);
    }

    [Property(MaxTest = 100)]
    public Property LrAt_StaysWithinZeroAndBase_AndWarmupRises()
    {
        var cases = from t in Gen.Choose(1, 400) from w in Gen.Choose(0, 400) select (t, w: Math.Min(w, t));
        return Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var s = new LrSchedule(1.0, c.w, c.t);
            for (int k = 0; k < c.t; k++)
            {
                double lr = s.LrAt(k);
                Assert.InRange(lr, 0, 1 + 1e-15);
                if (k > 0 && k < c.w) Assert.True(lr > s.LrAt(k - 1));
                if (k > c.w) Assert.True(lr <= s.LrAt(k - 1));
            }
        });
    }

    [Fact]
    public void AccumulationPlan_LastPartialWindowUsesTheRemainder()
    {
        var p = new AccumulationPlan(10, 4);
        Assert.Equal([4, 4, 4, 4, 4, 4, 4, 4, 2, 2], Enumerable.Range(0, 10).Select(p.LossDivisor));
        Assert.Equal([3, 7, 9], Enumerable.Range(0, 10).Where(p.EndsStep));
        Assert.Equal(3, p.OptimizerSteps);
        Assert.Throws<ArgumentOutOfRangeException>(() => p.LossDivisor(10));
    }

    [Fact]
    public void AccumulationPlan_ExactWindowsAndNoAccumulation()
    {
        var p = new AccumulationPlan(8, 4);
        Assert.All(Enumerable.Range(0, 8), k => Assert.Equal(4, p.LossDivisor(k)));
        Assert.Equal([3, 7], Enumerable.Range(0, 8).Where(p.EndsStep));
        var one = new AccumulationPlan(5, 1);
        Assert.All(Enumerable.Range(0, 5), k => { Assert.Equal(1, one.LossDivisor(k)); Assert.True(one.EndsStep(k)); });
        var big = new AccumulationPlan(3, 16); // fewer iterations than one window: divisor 3, one step at the end
        Assert.Equal([3, 3, 3], Enumerable.Range(0, 3).Select(big.LossDivisor));
        Assert.Equal([2], Enumerable.Range(0, 3).Where(big.EndsStep));
    }
}
