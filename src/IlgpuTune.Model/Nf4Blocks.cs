using System.Runtime.Intrinsics;

namespace IlgpuTune.Model;

/// <summary>
/// Nf4Codec.QuantizeCpu for NF4 with eight values per step: NF4's decision tree is monotone, so a value's code is the
/// number of the 15 thresholds it is greater than (NaN: none, code 0, as the tree). absmax is taken with the scalar
/// rule (a NaN never replaces it) and values are scaled by the same 1 / absmax, so the bytes are Nf4Codec's. A block that
/// is not 64 whole values (the last of an odd tensor) goes to Nf4Codec.
/// </summary>
internal static class Nf4Blocks
{
    // The tree's thresholds (Nf4Codec.QuantizeNf4), ascending.
    private static readonly float[] Thresholds =
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
        -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f, 0.2035212516784668f,
        0.2920137718319893f, 0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    /// <summary>x: values of whole and partial blocks of 64; packed: (x.Length + 1) / 2 bytes; absmax: one per block.</summary>
    public static void Quantize(ReadOnlySpan<float> x, Span<byte> packed, Span<float> absmax)
    {
        const int block = Numerics.Nf4Codec.BlockSize;
        if (!Vector256.IsHardwareAccelerated)
        {
            Numerics.Nf4Codec.QuantizeCpu(x, block, Numerics.QuantType.Nf4, packed, absmax);
            return;
        }
        Span<int> codes = stackalloc int[block];
        int whole = x.Length / block;
        for (int b = 0; b < whole; b++)
        {
            var blk = x.Slice(b * block, block);
            var amax = Vector256<float>.Zero;
            for (int j = 0; j < block; j += 8)
            {
                var a = Vector256.Abs(Vector256.Create(blk.Slice(j, 8)));
                amax = Vector256.ConditionalSelect(Vector256.GreaterThan(a, amax), a, amax);
            }
            float m = 0f;
            for (int l = 0; l < 8; l++)
                if (amax[l] > m) m = amax[l];
            absmax[b] = m;
            var r = Vector256.Create(1f / m);
            for (int j = 0; j < block; j += 8)
            {
                var v = Vector256.Create(blk.Slice(j, 8)) * r;
                var count = Vector256<int>.Zero;
                foreach (var t in Thresholds) count -= Vector256.GreaterThan(v, Vector256.Create(t)).AsInt32();
                count.CopyTo(codes.Slice(j, 8));
            }
            var bytes = packed.Slice(b * block / 2, block / 2);
            for (int k = 0; k < block / 2; k++) bytes[k] = (byte)((codes[2 * k] << 4) | codes[2 * k + 1]);
        }
        if (whole * block < x.Length)
            Numerics.Nf4Codec.QuantizeCpu(x[(whole * block)..], block, Numerics.QuantType.Nf4, packed[(whole * block / 2)..], absmax[whole..]);
    }
}
