namespace IlgpuTune.TestKit;

/// <summary>Seeded test data.</summary>
public static class Rand
{
    public static float[] Floats(int seed, int n, float scale = 1f)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1) * scale;
        return a;
    }

    public static double[] Doubles(int seed, int n, double scale = 1)
    {
        var r = new Random(seed);
        var a = new double[n];
        for (int i = 0; i < n; i++) a[i] = (r.NextDouble() * 2 - 1) * scale;
        return a;
    }
}
