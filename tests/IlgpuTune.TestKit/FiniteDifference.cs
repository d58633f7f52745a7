using Xunit.Sdk;

namespace IlgpuTune.TestKit;

/// <summary>Central finite differences in fp64, the check every backward is held to.</summary>
public static class FiniteDifference
{
    /// <summary>
    /// Compares <paramref name="analytic"/> with (f(x+h e_i) - f(x-h e_i)) / 2h for every i. Mutates and restores
    /// <paramref name="x"/>. Throws naming the tensor and index on a mismatch beyond 1e-6 + 1e-4·|numeric|.
    /// </summary>
    public static void Check(string name, double[] x, ReadOnlySpan<double> analytic, Func<double[], double> f, double h = 1e-6)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + h; double up = f(x);
            x[i] = keep - h; double down = f(x);
            x[i] = keep;
            double numeric = (up - down) / (2 * h);
            if (Math.Abs(numeric - analytic[i]) > 1e-6 + 1e-4 * Math.Abs(numeric))
                throw new XunitException($"{name}[{i}]: analytic {analytic[i]:G10}, numeric {numeric:G10}");
        }
    }
}
