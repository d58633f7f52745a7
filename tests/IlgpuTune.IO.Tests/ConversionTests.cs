using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

public class ConversionTests
{
    /// <summary>Writes one tensor "x" of any safetensors dtype (the writer only knows ours) and opens the file.</summary>
    private static SafetensorsFile OneTensor(TempDir dir, string dtype, long[] shape, byte[] data)
    {
        string path = dir.File(dtype + ".safetensors");
        string header = $$$"""{"x":{"dtype":"{{{dtype}}}","shape":[{{{string.Join(",", shape)}}}],"data_offsets":[0,{{{data.Length}}}]}}""";
        File.WriteAllBytes(path, Bytes.Safetensors(Bytes.Padded(header), data));
        return SafetensorsFile.Open(path);
    }

    private static float[] Read(TempDir dir, string dtype, byte[] data, int bytesPerElement)
    {
        using var f = OneTensor(dir, dtype, [data.Length / bytesPerElement], data);
        return f.ReadFloat32("x");
    }

    [Theory]
    [InlineData((ushort)0x3F80, 1f)]
    [InlineData((ushort)0x4010, 2.25f)]
    [InlineData((ushort)0xC000, -2f)]
    [InlineData((ushort)0x3E20, 0.15625f)]
    [InlineData((ushort)0x7F7F, 3.3895314e38f)]
    [InlineData((ushort)0x0001, 9.18355e-41f)]
    [InlineData((ushort)0x8000, -0f)]
    [InlineData((ushort)0x7F80, float.PositiveInfinity)]
    [InlineData((ushort)0xFF80, float.NegativeInfinity)]
    public void Bf16_KnownValues(ushort bits, float expected)
    {
        using var dir = new TempDir();
        var actual = Read(dir, "BF16", Bytes.Of(bits), 2)[0];
        Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(actual));
        Assert.Equal(bits, HalfBits.FloatToBf16(actual));
    }

    [Theory]
    [InlineData((ushort)0x3C00, 1f)]
    [InlineData((ushort)0xC000, -2f)]
    [InlineData((ushort)0x3555, 0.33325195f)]
    [InlineData((ushort)0x7BFF, 65504f)]
    [InlineData((ushort)0x0001, 5.9604645e-8f)]
    [InlineData((ushort)0x0400, 6.1035156e-5f)]
    [InlineData((ushort)0x8000, -0f)]
    [InlineData((ushort)0x7C00, float.PositiveInfinity)]
    [InlineData((ushort)0xFC00, float.NegativeInfinity)]
    public void F16_KnownValues(ushort bits, float expected)
    {
        using var dir = new TempDir();
        var actual = Read(dir, "F16", Bytes.Of(bits), 2)[0];
        Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(actual));
        Assert.Equal(bits, HalfBits.FloatToF16(actual));
    }

    [Fact]
    public void Bf16AndF16_AllBitPatterns_MatchHalfBits()
    {
        using var dir = new TempDir();
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var bf = Read(dir, "BF16", Bytes.Of(all), 2);
        var h = Read(dir, "F16", Bytes.Of(all), 2);
        for (int i = 0; i < all.Length; i++)
        {
            Assert.Equal(HalfBits.Bf16ToFloat(all[i]), bf[i]);
            float e = HalfBits.F16ToFloat(all[i]);
            Assert.True(float.IsNaN(e) ? float.IsNaN(h[i]) : e.Equals(h[i]) && float.IsNegative(e) == float.IsNegative(h[i]),
                $"F16 0x{i:X4}: {h[i]}, expected {e}");
        }
    }

    [Fact]
    public void Writer_Bf16F16_RoundToNearestEven()
    {
        using var dir = new TempDir();
        float[] values = [1f + 1f / 256, 1f + 3f / 256, 1f + 1f / 2048, 1f + 3f / 2048, 1e-3f, -7.3f];
        string path = dir.File("h.safetensors");
        SafetensorsWriter.Write(path, [
            new TensorToWrite("bf", DType.BF16, [values.Length], Bytes.Of(values.Select(HalfBits.FloatToBf16).ToArray())),
            new TensorToWrite("h", DType.F16, [values.Length], Bytes.Of(values.Select(HalfBits.FloatToF16).ToArray())),
        ]);
        using var file = SafetensorsFile.Open(path);
        // Ties go to the even mantissa (bf16 keeps 7 mantissa bits, f16 keeps 10): 1+1/256 -> 1, 1+3/256 -> 1+4/256.
        Assert.Equal([1f, 1f + 4f / 256, 1f, 1f, 0.00099945068f, -7.3125f], file.ReadFloat32("bf"));
        Assert.Equal([1f + 1f / 256, 1f + 3f / 256, 1f, 1f + 4f / 2048, 0.0010004044f, -7.3007812f], file.ReadFloat32("h"));
    }

    [Fact]
    public void Integers_Float64_AndBool_ToFloat()
    {
        using var dir = new TempDir();
        Assert.Equal([-1.5f, 1e30f, 0f], Read(dir, "F64", Bytes.Of(-1.5, 1e30, 0.0), 8));
        Assert.Equal([-128f, 127f], Read(dir, "I8", Bytes.Of<sbyte>(-128, 127), 1));
        Assert.Equal([-32768f, 32767f], Read(dir, "I16", Bytes.Of<short>(-32768, 32767), 2));
        Assert.Equal([65535f], Read(dir, "U16", Bytes.Of<ushort>(65535), 2));
        Assert.Equal([4294967295f], Read(dir, "U32", Bytes.Of(uint.MaxValue), 4));
        Assert.Equal([-9.223372e18f, 3f], Read(dir, "I64", Bytes.Of(long.MinValue, 3L), 8));
        Assert.Equal([1.8446744e19f], Read(dir, "U64", Bytes.Of(ulong.MaxValue), 8));
        Assert.Equal([0f, 1f, 1f], Read(dir, "BOOL", [0, 1, 2], 1));
    }

    [Theory]
    [InlineData("F8_E4M3", 0x7E, 448f)]
    [InlineData("F8_E4M3", 0x38, 1f)]
    [InlineData("F8_E4M3", 0xB0, -0.5f)]
    [InlineData("F8_E4M3", 0x01, 0.001953125f)] // 2^-9, smallest subnormal
    [InlineData("F8_E4M3", 0x80, -0f)]
    [InlineData("F8_E4M3", 0x7F, float.NaN)]
    [InlineData("F8_E4M3", 0xFF, float.NaN)]
    [InlineData("F8_E5M2", 0x7B, 57344f)]
    [InlineData("F8_E5M2", 0x3C, 1f)]
    [InlineData("F8_E5M2", 0x01, 1.5258789e-5f)] // 2^-16
    [InlineData("F8_E5M2", 0x7C, float.PositiveInfinity)]
    [InlineData("F8_E5M2", 0xFC, float.NegativeInfinity)]
    [InlineData("F8_E5M2", 0x7E, float.NaN)]
    [InlineData("F8_E4M3FNUZ", 0x7F, 240f)]
    [InlineData("F8_E4M3FNUZ", 0x40, 1f)]
    [InlineData("F8_E4M3FNUZ", 0x01, 0.0009765625f)] // 2^-10
    [InlineData("F8_E4M3FNUZ", 0xFF, -240f)]
    [InlineData("F8_E4M3FNUZ", 0x80, float.NaN)]
    [InlineData("F8_E5M2FNUZ", 0x7F, 57344f)]
    [InlineData("F8_E5M2FNUZ", 0x40, 1f)]
    [InlineData("F8_E5M2FNUZ", 0x01, 7.6293945e-6f)] // 2^-17
    [InlineData("F8_E5M2FNUZ", 0x80, float.NaN)]
    [InlineData("F8_E8M0", 127, 1f)]
    [InlineData("F8_E8M0", 128, 2f)]
    [InlineData("F8_E8M0", 120, 0.0078125f)]
    [InlineData("F8_E8M0", 0, 5.877472e-39f)] // 2^-127
    [InlineData("F8_E8M0", 254, 1.7014118e38f)] // 2^127
    [InlineData("F8_E8M0", 255, float.NaN)]
    public void Fp8_KnownValues(string dtype, int bits, float expected)
    {
        using var dir = new TempDir();
        var actual = Read(dir, dtype, [(byte)bits], 1)[0];
        if (float.IsNaN(expected)) Assert.True(float.IsNaN(actual), $"{dtype} 0x{bits:X2}: {actual}, expected NaN");
        else Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(actual));
    }

    [Fact]
    public void ReadInt32_WidensAndRangeChecks()
    {
        using var dir = new TempDir();
        int[] Ints(string dtype, byte[] data, int size)
        {
            using var f = OneTensor(dir, dtype, [data.Length / size], data);
            return f.ReadInt32("x");
        }
        Assert.Equal([-128, 127], Ints("I8", Bytes.Of<sbyte>(-128, 127), 1));
        Assert.Equal([0, 255], Ints("U8", [0, 255], 1));
        Assert.Equal([-32768, 32767], Ints("I16", Bytes.Of<short>(-32768, 32767), 2));
        Assert.Equal([65535], Ints("U16", Bytes.Of<ushort>(65535), 2));
        Assert.Equal([0, 1, 1], Ints("BOOL", [0, 1, 7], 1));
        Assert.Equal([int.MaxValue], Ints("U32", Bytes.Of((uint)int.MaxValue), 4));
        Assert.Equal([int.MinValue, int.MaxValue, -1], Ints("I64", Bytes.Of((long)int.MinValue, int.MaxValue, -1L), 8));
        Assert.Equal([5], Ints("U64", Bytes.Of(5UL), 8));

        foreach (var (dtype, data, size, value) in new (string, byte[], int, string)[]
                 {
                     ("I64", Bytes.Of(1L, 1L << 31), 8, "2147483648"),
                     ("I64", Bytes.Of(0L, int.MinValue - 1L), 8, "-2147483649"),
                     ("U64", Bytes.Of(0UL, ulong.MaxValue), 8, "18446744073709551615"),
                     ("U32", Bytes.Of(0u, 1u << 31), 4, "2147483648"),
                 })
        {
            using var f = OneTensor(dir, dtype, [2], data);
            var e = Assert.Throws<OverflowException>(() => f.ReadInt32("x"));
            Assert.Contains("tensor 'x'", e.Message);
            Assert.Contains(f.Path, e.Message);
            Assert.Contains($"element 1 = {value}", e.Message);
        }
    }

    [Fact]
    public void UnsupportedConversions_Throw()
    {
        using var dir = new TempDir();
        using (var c = OneTensor(dir, "C64", [1], new byte[8]))
            Assert.Contains("C64", Assert.Throws<NotSupportedException>(() => c.ReadFloat32("x")).Message);
        using (var f4 = OneTensor(dir, "F4", [2], new byte[1]))
            Assert.Throws<NotSupportedException>(() => f4.ReadFloat32("x"));
        foreach (var dtype in new[] { "F32", "BF16", "F8_E4M3" })
        {
            using var f = OneTensor(dir, dtype, [1], new byte[SafetensorsDTypes.Bits(dtype)!.Value / 8]);
            Assert.Throws<NotSupportedException>(() => f.ReadInt32("x"));
        }
    }
}
