// rope_scaling variants of HF's inv_freq (moved here with RopeScaling from the kernel tests; the default table and the
// rotation kernels stay tested in Kernels.Tests/RopeTests).
using IlgpuTune.Model;

namespace IlgpuTune.Model.Tests;

public class RopeScalingTests
{
    [Fact]
    public void InverseFrequencies_Linear_DividesByFactor()
    {
        var plain = RopeScaling.None.InverseFrequencies(64, 10000);
        var linear = new RopeScaling("linear", Factor: 4).InverseFrequencies(64, 10000);
        for (int j = 0; j < plain.Length; j++) Assert.Equal(plain[j] / 4, linear[j]);
    }

    [Fact]
    public void InverseFrequencies_Llama3_MatchesHandComputedValues()
    {
        // Llama-3.1: D 128, theta 500000, factor 8, low 1, high 4, original 8192. The wavelength 2*pi/inv splits at
        // 8192/4 = 2048 and 8192/1 = 8192: j <= 28 keep inv, j >= 35 get inv/8, 29..34 blend (values from the formula in double).
        var inv = new RopeScaling("llama3", 8, 1, 4, 8192).InverseFrequencies(128, 500000);
        (int J, double Expected)[] anchors =
        [
            (0, 1.0), (28, 0.0032114459947525913), (29, 0.002166570763503359), (32, 0.0005248461609929547),
            (34, 0.00017850781276799638), (35, 9.556212353964683e-05), (63, 3.068925988914511e-07),
        ];
        foreach (var (j, expected) in anchors) Assert.Equal(expected, inv[j], 1e-5 * expected);
        for (int j = 0; j < 64; j++) Assert.Equal(Llama3Double(j), inv[j], 1e-5 * Llama3Double(j));

        static double Llama3Double(int j)
        {
            double f = 1 / Math.Pow(500000, 2.0 * j / 128), wavelen = 2 * Math.PI / f;
            if (wavelen < 2048) return f;
            if (wavelen > 8192) return f / 8;
            double smooth = (8192 / wavelen - 1) / 3;
            return (1 - smooth) * f / 8 + smooth * f;
        }
    }

    [Fact]
    public void DynamicNtkTheta_GrowsOnlyPastMaxPositions()
    {
        Assert.Equal(10000, RopeScaling.DynamicNtkTheta(128, 10000, 2, 4096, 4096));
        // 10000 * (2*8192/4096 - 1)^(128/126)
        Assert.Equal(30527.7367488067, RopeScaling.DynamicNtkTheta(128, 10000, 2, 8192, 4096), 1e-9);
        Assert.Equal(RopeScaling.None.InverseFrequencies(8, 10000), new RopeScaling("dynamic", 2).InverseFrequencies(8, 10000));
    }

    [Fact]
    public void InverseFrequencies_RejectsUnknownType() =>
        Assert.Throws<NotSupportedException>(() => new RopeScaling("yarn", 4).InverseFrequencies(8, 10000));
}
