using IlgpuTune.IO;

namespace IlgpuTune.Deploy.Tests;

// Q8_0 / Q4_0 blocks byte for byte as ggml's reference quantizers make them, and the GGUF header as written.
public class GgmlQuantsTests
{
    [Fact]
    public void Q8_0BlockIsScaleThenRoundedInt8()
    {
        var x = Enumerable.Range(0, 32).Select(i => (i - 16) * 0.25f).ToArray(); // amax 4 (x[0] = -4)
        var q = GgmlQuants.QuantizeQ8_0(x);
        Assert.Equal(34, q.Length);
        Assert.Equal((Half)(4f / 127f), BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(q, 0)));
        Assert.Equal(-127, (sbyte)q[2]);
        Assert.Equal(0, (sbyte)q[2 + 16]);
        Assert.Equal((sbyte)MathF.Round(0.25f * 127f / 4f, MidpointRounding.AwayFromZero), (sbyte)q[2 + 17]); // 7.9375 -> 8
        var back = GgmlQuants.Dequantize(GgmlType.Q8_0, q, 32);
        for (int i = 0; i < 32; i++) Assert.True(MathF.Abs(back[i] - x[i]) <= 4f / 127f / 2 + 1e-3f);
    }

    [Fact]
    public void Q4_0BlockUsesTheSignedLargestValueAndPacksHalves()
    {
        var x = new float[32];
        x[0] = 2f;    // the largest magnitude, positive: d = 2 / -8 = -0.25
        x[16] = -1f;  // -1 / -0.25 = 4 -> (int)(4 + 8.5) = 12
        x[1] = 0.5f;  // -2 -> 6
        var q = GgmlQuants.QuantizeQ4_0(x);
        Assert.Equal(18, q.Length);
        Assert.Equal((Half)(-0.25f), BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(q, 0)));
        Assert.Equal(0 | (12 << 4), q[2]);   // x0 = 2 -> -8 -> (int)0.5 = 0 (low nibble); x16 in the high nibble
        Assert.Equal(6 | (8 << 4), q[3]);
        Assert.Equal(8 | (8 << 4), q[4]);   // zeros are 8
        var back = GgmlQuants.Dequantize(GgmlType.Q4_0, q, 32);
        Assert.Equal([2f, 0.5f], back[..2]);
        Assert.Equal(-1f, back[16]);
    }

    [Fact]
    public void WrittenFileReadsBackWithAlignedData()
    {
        using var dir = new TestKit.TempDir();
        string path = dir.File("t.gguf");
        var tensors = new[] { new GgufTensorSpec("a", GgmlType.F32, [3]), new GgufTensorSpec("b", GgmlType.Q8_0, [2, 32]) };
        var data = new Dictionary<string, byte[]>
        {
            ["a"] = [.. new[] { 1f, 2f, 3f }.SelectMany(BitConverter.GetBytes)],
            ["b"] = GgmlQuants.QuantizeQ8_0(Enumerable.Range(0, 64).Select(i => (float)i).ToArray()),
        };
        using (var s = File.Create(path))
            GgufWriter.Write(s, [new("general.architecture", GgufValue.Str("llama")), new("x.tokens", GgufValue.Strings(["a", "é"]))],
                tensors, t => data[t.Name]);
        var f = GgufFile.Read(path);
        Assert.Equal("llama", f.Metadata["general.architecture"].Value);
        Assert.Equal(new[] { "a", "é" }, (string[])f.Metadata["x.tokens"].Value);
        Assert.All(f.Tensors, t => Assert.Equal(0, t.Offset % GgufWriter.Alignment));
        Assert.Equal(new long[] { 2, 32 }, f.Tensors[1].Shape);
        foreach (var t in f.Tensors) Assert.Equal(data[t.Name], f.ReadBytes(t));
    }
}
