using IlgpuTune.Numerics;

namespace IlgpuTune.IO.Tests;

/// <summary>SafetensorsWriter.Encode's vector BF16 path gives HalfBits.FloatToBf16's bits for every kind of value.</summary>
public class EncodeTests
{
    [Fact]
    public void Bf16_MatchesTheScalarRounding_OnSpecialAndRandomValues()
    {
        var special = new[]
        {
            0f, -0f, 1f, -1f, float.Epsilon, -float.Epsilon, float.MaxValue, float.MinValue, float.PositiveInfinity,
            float.NegativeInfinity, float.NaN, BitConverter.UInt32BitsToSingle(0x7F800001), BitConverter.UInt32BitsToSingle(0xFFC12345),
            BitConverter.UInt32BitsToSingle(0x3F808000), BitConverter.UInt32BitsToSingle(0x3F818000), // ties: to even, down and up
            BitConverter.UInt32BitsToSingle(0x7F7FFFFF), BitConverter.UInt32BitsToSingle(0x00800000), BitConverter.UInt32BitsToSingle(0x007FFFFF),
        };
        var rng = new Random(5);
        var data = special.Concat(Enumerable.Range(0, 1_000_003).Select(_ => BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)))).ToArray();
        var bytes = SafetensorsWriter.Encode(data, DType.BF16).ToArray();
        for (int i = 0; i < data.Length; i++)
        {
            ushort expected = HalfBits.FloatToBf16(data[i]), actual = BitConverter.ToUInt16(bytes, 2 * i);
            Assert.True(expected == actual, $"element {i} ({BitConverter.SingleToUInt32Bits(data[i]):X8}): {actual:X4}, expected {expected:X4}");
        }
    }
}
