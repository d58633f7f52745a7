using ILGPU.Runtime;
using IlgpuTune.Kernels;
using IlgpuTune.TestKit;

namespace IlgpuTune.Kernels.Tests;

// Casts have no finite-difference test: rounding is not differentiable, and their backward is the reverse cast.
[Collection(IlgpuCpuCollection.Name)]
public class CastTests(IlgpuCpuFixture gpu)
{
    static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);
    static uint Bits(float x) => BitConverter.SingleToUInt32Bits(x);

    static readonly float[] Specials =
    [
        0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, F(0x7F800001), F(0xFFC12345), F(0x7FBFFFFF),
        float.MaxValue, float.MinValue, float.Epsilon, -float.Epsilon, 1.17549435e-38f /* smallest normal */,
        65504f, 65519.996f, 65520f, 65536f, -65520f, 6.1035156e-05f /* 2^-14 */, 5.9604645e-08f /* 2^-24 */,
        2.9802322e-08f /* 2^-25 */, F(0x33000001), 8.940697e-08f /* 1.5 * 2^-24 */, 1f, -1f, 1.00390625f, 3.14159265f,
    ];

    // Every value a 16-bit format with this float mapping can round to, its neighbours' midpoints, and one float
    // either side of each midpoint: all rounding boundaries of that format.
    static float[] Boundaries(Func<ushort, float> decode)
    {
        var list = new List<float>();
        for (int h = 0; h < 0x10000; h++)
        {
            float v = decode((ushort)h);
            if (!float.IsFinite(v)) continue;
            list.Add(v);
            float next = decode((ushort)(h + 1 == 0x10000 ? h : h + 1));
            if (!float.IsFinite(next) || Math.Sign(next) != Math.Sign(v) && v != 0) continue;
            double mid = ((double)v + next) / 2;
            float m = (float)mid;
            if (m == mid) list.AddRange([m, MathF.BitDecrement(m), MathF.BitIncrement(m)]);
        }
        return list.ToArray();
    }

    static float[] RandomFloats(int seed, int n)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => F((uint)r.NextInt64(0, 1L << 32))).ToArray();
    }

    // Independent bf16 spec: the nearer of the two bf16 values around x, ties to the even one, via doubles.
    static ushort Bf16Reference(float x)
    {
        uint bits = Bits(x);
        if (float.IsNaN(x)) return (ushort)((bits >> 16) | 0x40);
        uint sign = bits & 0x80000000, lo = (bits & 0x7FFFFFFF) >> 16, hi = lo + 1;
        static double Value(uint p) => p == 0x7F80 ? Math.Pow(2, 128) : F(p << 16); // 0x7F80 is inf: use the value it stands for
        double ax = Math.Abs((double)x), dLo = ax - Value(lo), dHi = Value(hi) - ax;
        uint pick = dLo < dHi || (dLo == dHi && (lo & 1) == 0) ? lo : hi;
        if (float.IsInfinity(x)) pick = 0x7F80;
        return (ushort)((sign >> 16) | pick);
    }

    [Fact]
    public void F16_MatchesSystemHalf()
    {
        var decoded = new float[0x10000];
        var all = Enumerable.Range(0, 0x10000).Select(h => (ushort)h).ToArray();
        Cast.FromF16Cpu(all, decoded);
        for (int h = 0; h < 0x10000; h++)
            Assert.True(Bits((float)BitConverter.UInt16BitsToHalf((ushort)h)) == Bits(decoded[h]), $"FromF16 0x{h:X4}: {decoded[h]}");

        var x = Specials.Concat(Boundaries(h => (float)BitConverter.UInt16BitsToHalf(h))).Concat(RandomFloats(1, 200_000)).ToArray();
        var encoded = new ushort[x.Length];
        Cast.ToF16Cpu(x, encoded);
        for (int i = 0; i < x.Length; i++)
        {
            ushort want = BitConverter.HalfToUInt16Bits((Half)x[i]);
            Assert.True(want == encoded[i], $"ToF16({x[i]:R} = 0x{Bits(x[i]):X8}): 0x{encoded[i]:X4}, System.Half gives 0x{want:X4}");
        }
    }

    [Fact]
    public void Bf16_RoundsToNearestEven()
    {
        var decoded = new float[0x10000];
        var all = Enumerable.Range(0, 0x10000).Select(h => (ushort)h).ToArray();
        Cast.FromBf16Cpu(all, decoded);
        for (int h = 0; h < 0x10000; h++) Assert.Equal((uint)h << 16, Bits(decoded[h]));

        var x = Specials.Concat(Boundaries(h => F((uint)h << 16))).Concat(RandomFloats(2, 200_000)).ToArray();
        var encoded = new ushort[x.Length];
        Cast.ToBf16Cpu(x, encoded);
        for (int i = 0; i < x.Length; i++)
        {
            ushort want = Bf16Reference(x[i]);
            Assert.True(want == encoded[i], $"ToBf16({x[i]:R} = 0x{Bits(x[i]):X8}): 0x{encoded[i]:X4}, expected 0x{want:X4}");
        }
        Cast.ToBf16Cpu([F(0x7F800001), float.MaxValue, F(0x3F808000), F(0x3F818000)], encoded);
        Assert.Equal<ushort>([0x7FC0, 0x7F80, 0x3F80, 0x3F82], encoded[..4]); // NaN kept, overflow to inf, ties to even
    }

    [Fact]
    public void Kernels_MatchCpuReference()
    {
        var all = Enumerable.Range(0, 0x10000).Select(h => (ushort)h).ToArray();
        var x = Specials.Concat(RandomFloats(3, 3000)).ToArray();
        using var gAll = gpu.Accelerator.Allocate1D(all); using var gx = gpu.Upload(x);
        using var gFromBf16 = gpu.Zeros(all.Length); using var gFromF16 = gpu.Zeros(all.Length);
        using var gToBf16 = gpu.Accelerator.Allocate1D<ushort>(x.Length); using var gToF16 = gpu.Accelerator.Allocate1D<ushort>(x.Length);

        Cast.FromBf16(gpu.Kernels, gAll.View, all.Length, gFromBf16.View);
        Cast.FromF16(gpu.Kernels, gAll.View, all.Length, gFromF16.View);
        Cast.ToBf16(gpu.Kernels, gx.View, x.Length, gToBf16.View);
        Cast.ToF16(gpu.Kernels, gx.View, x.Length, gToF16.View);
        gpu.Accelerator.Synchronize();

        var fromBf16 = new float[all.Length]; var fromF16 = new float[all.Length];
        var toBf16 = new ushort[x.Length]; var toF16 = new ushort[x.Length];
        Cast.FromBf16Cpu(all, fromBf16);
        Cast.FromF16Cpu(all, fromF16);
        Cast.ToBf16Cpu(x, toBf16);
        Cast.ToF16Cpu(x, toF16);
        Assert.Equal(fromBf16.Select(Bits), gFromBf16.GetAsArray1D().Select(Bits));
        Assert.Equal(fromF16.Select(Bits), gFromF16.GetAsArray1D().Select(Bits));
        Assert.Equal(toBf16, gToBf16.GetAsArray1D());
        Assert.Equal(toF16, gToF16.GetAsArray1D());
    }

    [Theory]
    [InlineData(0)] // aligned: the four-a-thread kernels with a tail
    [InlineData(1)] // misaligned: the scalar kernels
    public void Kernels_AtAnyAlignment_MatchCpuReference(int offset)
    {
        var x = Specials.Concat(RandomFloats(5, 1001)).ToArray();
        int n = x.Length - offset;
        using var gx = gpu.Upload(x);
        using var gb = gpu.Accelerator.Allocate1D<ushort>(x.Length); using var gh = gpu.Accelerator.Allocate1D<ushort>(x.Length);
        using var gBack = gpu.Zeros(x.Length); using var gBackH = gpu.Zeros(x.Length);
        Cast.ToBf16(gpu.Kernels, gx.View.SubView(offset, n), n, gb.View.SubView(offset, n));
        Cast.ToF16(gpu.Kernels, gx.View.SubView(offset, n), n, gh.View.SubView(offset, n));
        Cast.FromBf16(gpu.Kernels, gb.View.SubView(offset, n), n, gBack.View.SubView(offset, n));
        Cast.FromF16(gpu.Kernels, gh.View.SubView(offset, n), n, gBackH.View.SubView(offset, n));
        gpu.Accelerator.Synchronize();

        var b = new ushort[n]; var h = new ushort[n]; var back = new float[n]; var backH = new float[n];
        Cast.ToBf16Cpu(x.AsSpan(offset), b);
        Cast.ToF16Cpu(x.AsSpan(offset), h);
        Cast.FromBf16Cpu(b, back);
        Cast.FromF16Cpu(h, backH);
        Assert.Equal(b, gb.GetAsArray1D()[offset..]);
        Assert.Equal(h, gh.GetAsArray1D()[offset..]);
        Assert.Equal(back.Select(Bits), gBack.GetAsArray1D()[offset..].Select(Bits));
        Assert.Equal(backH.Select(Bits), gBackH.GetAsArray1D()[offset..].Select(Bits));
    }
}
