using Xunit.Sdk;

namespace IlgpuTune.TestKit;

/// <summary>Element-wise closeness: pass when |actual - expected| ≤ atol + rtol·|expected| everywhere.</summary>
public static class Close
{
    /// <summary>Throws with the max abs/rel error and the first failing index; returns (maxAbs, maxRel) on success.</summary>
    public static (double MaxAbs, double MaxRel) Assert(string name, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual,
        double atol, double rtol)
    {
        if (expected.Length != actual.Length)
            throw new XunitException($"{name}: length {actual.Length}, expected {expected.Length}");
        double maxAbs = 0, maxRel = 0;
        int firstBad = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            double abs = Math.Abs(a - e);
            if (double.IsNaN(a) != double.IsNaN(e)) abs = double.PositiveInfinity;
            else if (double.IsNaN(a)) abs = 0;
            maxAbs = Math.Max(maxAbs, abs);
            maxRel = Math.Max(maxRel, abs / Math.Max(Math.Abs(e), 1e-12));
            if (firstBad < 0 && !(abs <= atol + rtol * Math.Abs(e))) firstBad = i;
        }
        if (firstBad >= 0)
            throw new XunitException(
                $"{name}: max abs {maxAbs:G4}, max rel {maxRel:G4}; first failure at [{firstBad}]: " +
                $"actual {actual[firstBad]:G9}, expected {expected[firstBad]:G9} (atol {atol:G3}, rtol {rtol:G3})");
        return (maxAbs, maxRel);
    }

    public static (double MaxAbs, double MaxRel) Assert(string name, ReadOnlySpan<double> expected, ReadOnlySpan<float> actual,
        double atol, double rtol)
    {
        var e = new float[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = (float)expected[i];
        return Assert(name, e, actual, atol, rtol);
    }

    /// <summary>Max |a - e| relative to max |e|, the metric the parity suite reports.</summary>
    public static double RelativeToMax(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        double maxAbs = 0, maxRef = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxAbs = Math.Max(maxAbs, Math.Abs((double)actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)expected[i]));
        }
        return maxAbs / Math.Max(maxRef, 1e-30);
    }
}
