namespace IlgpuTune.Numerics;

/// <summary>Conversions between float and the 16-bit patterns of bf16 and f16 (round to nearest even).</summary>
public static class HalfBits
{
    public static float Bf16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    public static ushort FloatToBf16(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((u >> 16) | 0x40);
        u += 0x7FFFu + ((u >> 16) & 1u);
        return (ushort)(u >> 16);
    }

    public static float F16ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    public static ushort FloatToF16(float value) => BitConverter.HalfToUInt16Bits((Half)value);
}
