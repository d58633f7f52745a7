// The tensor-core attention launchers' plan as pure functions of sizes, addresses and the LaunchTarget: the kernel Params,
// shared bytes and grid of the mma.sync forward, dQ and dK/dV kernels. The ILGPU launchers and Core's DriverBackend both use
// them (the driver runtime does not launch the Hopper wgmma variants yet).
namespace IlgpuTune.Kernels;

public static partial class FlashAttentionHalf
{
    /// <summary>The cache (and precompiled PTX) name of one variant.</summary>
    internal static string KernelName(string kind, int headDim, HalfType type) => $"flashhalf.{kind}.{headDim}.{type}";

    /// <summary>One launch of a variant: its kernel name, shape (dynamic shared bytes included) and Params.</summary>
    internal readonly record struct HalfLaunch(string Kernel, ILGPU.KernelConfig Config, Params Params);

    // q, k, v (and dO for the backward kinds): device addresses of the 16-bit operands, 0 for empty views. tileBytes: the kernel's
    // shared tiles; the CPU emulation's per-warp scratch goes after them.
    static Params MakeParams(LaunchTarget t, Attention.Sizes s, bool causal, bool segmented, bool segmentsSorted, ulong q, ulong kk, ulong v,
        ulong dO, out int smemBytes, int tileBytes)
    {
        bool aligned = t.Emulated || (q % 16 == 0 && kk % 16 == 0 && v % 16 == 0 && dO % 16 == 0);
        int scratchOffset = (tileBytes + 15) / 16 * 4;
        smemBytes = t.Emulated ? scratchOffset * 4 + Threads / 32 * ScratchPerWarp * 4 : tileBytes;
        return new Params
        {
            QPtr = q, KPtr = kk, VPtr = v, DOPtr = dO,
            Seq = s.Seq, NumHeads = s.NumHeads, NumKvHeads = s.NumKvHeads, Groups = s.Groups,
            Causal = causal ? 1 : 0, Segmented = segmented ? 1 : 0, Sorted = segmented && segmentsSorted ? 1 : 0,
            Vec = aligned ? 1 : 0, ScratchOffset = scratchOffset, Window = Windowed(s) ? s.Window : 0,
            Scale = s.ScoreScale, ScaleLog2 = s.ScoreScale * Log2E,
        };
    }

    /// <summary>Whether the default registry (every wgmma kernel on) would take a Hopper wgmma kernel for this forward / backward.</summary>
    internal static (bool Forward, bool Backward) WgmmaApplies(LaunchTarget t, Attention.Sizes s, bool segmented, bool segmentsSorted)
    {
        bool eligible = t.Wgmma && !(segmentsSorted && segmented) && !Windowed(s);
        return (eligible && s.HeadDim == 128, eligible && s.HeadDim == WgmmaBackwardHeadDim);
    }

    internal static HalfLaunch ForwardPlan(LaunchTarget t, HalfType type, Attention.Sizes s, bool segmented, bool segmentsSorted, ulong q, ulong kk, ulong v)
    {
        Validate(s);
        var p = MakeParams(t, s, s.Causal, segmented, segmentsSorted, q, kk, v, 0, out int smem, (ForwardRows + 4 * 64) * s.HeadDim * 2);
        return new(KernelName("Forward", s.HeadDim, type), Config(s.Batch * s.NumHeads, s.Seq, ForwardRows, smem), p);
    }

    internal static HalfLaunch QueryPlan(LaunchTarget t, HalfType type, Attention.Sizes s, bool segmented, bool segmentsSorted, ulong q, ulong kk,
        ulong v, ulong dO)
    {
        int rowsQ = BackwardQueryRows(s.HeadDim);
        var p = MakeParams(t, s, s.Causal, segmented, segmentsSorted, q, kk, v, dO, out int smem, (2 * rowsQ + 4 * 64) * s.HeadDim * 2);
        return new(KernelName("BackwardQuery", s.HeadDim, type), Config(s.Batch * s.NumHeads, s.Seq, rowsQ, smem), p);
    }

    internal static HalfLaunch KeyValuePlan(LaunchTarget t, HalfType type, Attention.Sizes s, bool segmented, bool segmentsSorted, ulong q, ulong kk,
        ulong v, ulong dO)
    {
        int bq = KeyValueBlockQ(s.HeadDim), keys = KeyValueKeys(s.HeadDim);
        var p = MakeParams(t, s, s.Causal, segmented, segmentsSorted, q, kk, v, dO, out int smem, (2 * keys + 4 * bq) * s.HeadDim * 2 + 6 * bq * 4);
        return new(KernelName("BackwardKeyValue", s.HeadDim, type), Config(s.Batch * s.NumKvHeads, s.Seq, keys, smem), p);
    }
}
