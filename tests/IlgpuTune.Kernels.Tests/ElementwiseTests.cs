using ILGPU.Runtime;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

[Collection(IlgpuCpuCollection.Name)]
public class ElementwiseTests(IlgpuCpuFixture gpu)
{
    [Theory]
    [InlineData(1)]
    [InlineData(33)]
    [InlineData(1000)] // more elements than the emulated grid has threads: exercises the grid-stride loop
    public void FlatKernels_MatchCpuReference(int n)
    {
        var a = Rand.Floats(1, n);
        var b = Rand.Floats(2, n);
        var y0 = Rand.Floats(3, n);
        using var ga = gpu.Upload(a); using var gb = gpu.Upload(b);
        using var gAdd = gpu.Zeros(n); using var gMul = gpu.Zeros(n); using var gScale = gpu.Zeros(n);
        using var gAcc = gpu.Upload(y0); using var gFill = gpu.Zeros(n);

        Elementwise.Add(gpu.Kernels, ga.View, gb.View, n, gAdd.View);
        Elementwise.Mul(gpu.Kernels, ga.View, gb.View, n, gMul.View);
        Elementwise.Scale(gpu.Kernels, ga.View, -1.5f, n, gScale.View);
        Elementwise.Accumulate(gpu.Kernels, ga.View, n, gAcc.View);
        Elementwise.Fill(gpu.Kernels, 0.25f, n, gFill.View);
        Elementwise.Mul(gpu.Kernels, ga.View, gb.View, n, ga.View); // exact aliasing of output and input
        gpu.Accelerator.Synchronize();

        var add = new float[n]; var mul = new float[n]; var scale = new float[n]; var acc = (float[])y0.Clone(); var fill = new float[n];
        Elementwise.AddCpu<float>(a, b, add);
        Elementwise.MulCpu<float>(a, b, mul);
        Elementwise.ScaleCpu<float>(a, -1.5f, scale);
        Elementwise.AccumulateCpu<float>(a, acc);
        Elementwise.FillCpu(0.25f, fill);
        Close.Assert("Add", add, gAdd.GetAsArray1D(), 0, 0);
        Close.Assert("Mul", mul, gMul.GetAsArray1D(), 0, 0);
        Close.Assert("Scale", scale, gScale.GetAsArray1D(), 0, 0);
        Close.Assert("Accumulate", acc, gAcc.GetAsArray1D(), 0, 0);
        Close.Assert("Fill", fill, gFill.GetAsArray1D(), 0, 0);
        Close.Assert("Mul in place", mul, ga.GetAsArray1D(), 0, 0);
    }

    [Theory]
    [InlineData(0)] // 16-byte aligned: the Float4 kernel with a tail
    [InlineData(1)] // misaligned: the scalar kernels
    public void AddScaleAccumulate_AtAnyAlignment_MatchCpuReference(int offset)
    {
        const int n = 1003;
        var a = Rand.Floats(1, n + offset);
        var b = Rand.Floats(2, n + offset);
        var y0 = Rand.Floats(3, n + offset);
        using var ga = gpu.Upload(a); using var gb = gpu.Upload(b); using var gAcc = gpu.Upload(y0);
        using var gAdd = gpu.Zeros(n + offset); using var gScale = gpu.Zeros(n + offset);
        Elementwise.Add(gpu.Kernels, ga.View.SubView(offset, n), gb.View.SubView(offset, n), n, gAdd.View.SubView(offset, n));
        Elementwise.Scale(gpu.Kernels, ga.View.SubView(offset, n), 0.75f, n, gScale.View.SubView(offset, n));
        Elementwise.Accumulate(gpu.Kernels, ga.View.SubView(offset, n), n, gAcc.View.SubView(offset, n));
        gpu.Accelerator.Synchronize();

        var add = new float[n]; var scale = new float[n]; var acc = y0[offset..];
        Elementwise.AddCpu<float>(a.AsSpan(offset), b.AsSpan(offset), add);
        Elementwise.ScaleCpu<float>(a.AsSpan(offset), 0.75f, scale);
        Elementwise.AccumulateCpu<float>(a.AsSpan(offset), acc);
        Close.Assert("Add", add, gAdd.GetAsArray1D()[offset..], 0, 0);
        Close.Assert("Scale", scale, gScale.GetAsArray1D()[offset..], 0, 0);
        Close.Assert("Accumulate", acc, gAcc.GetAsArray1D()[offset..], 0, 0);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(9, 40)]
    public void BiasKernels_MatchCpuReference(int rows, int cols)
    {
        var x = Rand.Floats(1, rows * cols);
        var bias = Rand.Floats(2, cols);
        var dY = Rand.Floats(3, rows * cols);
        var dBias = Rand.Floats(4, cols); // SumRows accumulates
        using var gx = gpu.Upload(x); using var gbias = gpu.Upload(bias); using var gdY = gpu.Upload(dY);
        using var gy = gpu.Zeros(rows * cols); using var gdBias = gpu.Upload(dBias);

        Elementwise.AddBias(gpu.Kernels, gx.View, gbias.View, rows, cols, gy.View);
        Elementwise.SumRows(gpu.Kernels, gdY.View, rows, cols, gdBias.View);
        gpu.Accelerator.Synchronize();

        var y = new float[rows * cols];
        Elementwise.AddBiasCpu<float>(x, bias, rows, cols, y);
        Elementwise.SumRowsCpu<float>(dY, rows, cols, dBias);
        Close.Assert("AddBias", y, gy.GetAsArray1D(), 0, 0);
        Close.Assert("SumRows", dBias, gdBias.GetAsArray1D(), 1e-6, 1e-5);
    }

    [Fact]
    public void Launcher_RejectsShortViews()
    {
        using var small = gpu.Zeros(4);
        Assert.Throws<ArgumentException>(() => Elementwise.Add(gpu.Kernels, small.View, small.View, 5, small.View));
        Assert.Throws<ArgumentException>(() => Elementwise.AddBias(gpu.Kernels, small.View, small.View, 1, 5, small.View));
    }

    // loss = <g, Mul(a, b)> + <h, Scale(a, alpha)> + <u, AddBias(x, bias)>; each backward is built from the forward ops.
    [Property(MaxTest = 25)]
    public Property Backward_MatchesFiniteDifferences()
    {
        var shapes = from rows in Gen.Choose(1, 4) from cols in Gen.Choose(1, 7) from seed in Gen.Choose(0, 10000) select (rows, cols, seed);
        return Prop.ForAll(shapes.ToArbitrary(), s =>
        {
            var (rows, cols, seed) = s;
            int n = rows * cols;
            const double alpha = -0.7;
            var a = Rand.Doubles(seed, n); var b = Rand.Doubles(seed + 1, n); var bias = Rand.Doubles(seed + 2, cols);
            var g = Rand.Doubles(seed + 3, n); var h = Rand.Doubles(seed + 4, n); var u = Rand.Doubles(seed + 5, n);
            static double Dot(double[] p, double[] q) { double d = 0; for (int i = 0; i < p.Length; i++) d += p[i] * q[i]; return d; }
            double Loss(double[] aa, double[] bb, double[] bi)
            {
                var y = new double[n];
                Elementwise.MulCpu<double>(aa, bb, y);
                double l = Dot(g, y);
                Elementwise.ScaleCpu<double>(aa, alpha, y);
                l += Dot(h, y);
                Elementwise.AddBiasCpu<double>(aa, bi, rows, cols, y);
                return l + Dot(u, y);
            }
            // dA = g*b + alpha*h + u (AddBias passes dY through); dB = g*a; dBias = SumRows(u)
            var dA = new double[n]; var t = new double[n];
            Elementwise.MulCpu<double>(g, b, dA);
            Elementwise.ScaleCpu<double>(h, alpha, t);
            Elementwise.AccumulateCpu<double>(t, dA);
            Elementwise.AccumulateCpu<double>(u, dA);
            var dB = new double[n];
            Elementwise.MulCpu<double>(g, a, dB);
            var dBias = new double[cols];
            Elementwise.SumRowsCpu<double>(u, rows, cols, dBias);
            FiniteDifference.Check("dA", a, dA, aa => Loss(aa, b, bias));
            FiniteDifference.Check("dB", b, dB, bb => Loss(a, bb, bias));
            FiniteDifference.Check("dBias", bias, dBias, bi => Loss(a, b, bi));
        });
    }
}
