namespace IlgpuTune.Core;

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

    /// <summary>float32 data as the little-endian bytes of an F32, BF16 or F16 tensor.</summary>
    public static byte[] Encode(ReadOnlySpan<float> data, DType dtype)
    {
        switch (dtype)
        {
            case DType.F32:
                return System.Runtime.InteropServices.MemoryMarshal.AsBytes(data).ToArray();
            case DType.BF16 or DType.F16:
                var bytes = new byte[data.Length * 2];
                var u = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
                for (int i = 0; i < data.Length; i++) u[i] = dtype == DType.BF16 ? FloatToBf16(data[i]) : FloatToF16(data[i]);
                return bytes;
            default:
                throw new ArgumentException($"floating-point data is written as F32, BF16 or F16, not {dtype}");
        }
    }
}
