// The GEMM launcher's plan as a pure function of sizes, addresses and the LaunchTarget: tile, split-K, the Params the kernel
// reads and the launch shapes. LaunchGemm (ILGPU) and Core's DriverBackend (precompiled PTX through the driver) both call it,
// so both launch the same kernel with the same arguments.
using ILGPU;

namespace IlgpuTune.Kernels;

public static partial class Gemm
{
    /// <summary>
    /// One product's launches: the tile kernel (Declaration(layout, type, Tile, emulated)) with Config and Epilogue when Splits is 1;
    /// else the tile kernel with Partial(workspace) into WorkspaceFloats of scratch, then gemm.splitreduce with ReduceConfig.
    /// </summary>
    internal readonly record struct GemmPlan(TileConfig Tile, int Splits, KernelConfig Config, Params Epilogue, Params Raw, long WorkspaceFloats,
        KernelConfig ReduceConfig, bool Emulated)
    {
        /// <summary>The split-K pass's Params: raw fp32 sums (alpha 1, no bias, overwrite) into ws[s][b][m][n] at <paramref name="workspace"/>.</summary>
        public Params Partial(ulong workspace)
        {
            var partial = Raw;
            partial.StrideC = (long)Raw.M * Raw.N;
            partial.SplitStrideC = WorkspaceFloats / Splits;
            partial.Alpha = 1f;
            partial.CPtr = workspace;
            partial.VecC = Raw.N % 4 == 0 && (Emulated || workspace % 16 == 0) ? 1 : 0;
            return partial;
        }
    }

    // a, b, c: device addresses of the operands (0 for empty views); sizes checked by the caller. outMode: 0 fp32, 1 bf16, 2 f16.
    internal static GemmPlan Plan(LaunchTarget k, GemmLayout layout, HalfType type, ulong a, ulong b, ulong c, bool hasBias, int batch, int m,
        int n, int kDim, long strideA, long strideB, long strideC, float alpha, bool accumulate, int outMode, TileConfig? tile, int splits)
    {
        var (autoTile, autoSplits) = Choose(k, batch, m, n, kDim);
        var t = tile ?? autoTile;
        if (Shape(t).Wgmma && !k.Emulated && !k.Wgmma)
            throw new ArgumentException($"GEMM tile {t} uses wgmma (sm_90a), which needs a compute capability 9.0 GPU", nameof(tile));
        int bk = Shape(t).Bk;
        int kTiles = (kDim + bk - 1) / bk;
        splits = Math.Clamp(splits > 0 ? splits : autoSplits, 1, Math.Max(1, kTiles));
        int tilesPerSplit = (kTiles + splits - 1) / Math.Max(splits, 1);
        if (kTiles > 0) splits = (kTiles + tilesPerSplit - 1) / tilesPerSplit; // no empty splits

        // Rows of the contiguous dim must be whole 16-byte chunks for cp.async (and the base 16-byte aligned on CUDA).
        long ldA = layout == GemmLayout.TN ? m : kDim, ldB = layout == GemmLayout.NT ? kDim : n;
        bool vecA = ldA % 8 == 0 && (batch == 1 || strideA % 8 == 0) && (k.Emulated || a % 16 == 0);
        bool vecB = ldB % 8 == 0 && (batch == 1 || strideB % 8 == 0) && (k.Emulated || b % 16 == 0);

        var p = new Params
        {
            APtr = a, BPtr = b, StrideA = strideA, StrideB = strideB,
            M = m, N = n, K = kDim, VecA = vecA ? 1 : 0, VecB = vecB ? 1 : 0,
            Splits = splits, TilesPerSplit = tilesPerSplit,
        };
        var epilogue = p;
        epilogue.StrideC = strideC;
        epilogue.Alpha = alpha;
        epilogue.Accumulate = accumulate ? 1 : 0;
        epilogue.OutMode = outMode;
        epilogue.HasBias = hasBias ? 1 : 0;
        // Vector stores of four need rows (n) and batch strides in whole quads, and an aligned base (16 B fp32, 8 B 16-bit).
        epilogue.CPtr = c;
        epilogue.VecC = n % 4 == 0 && (batch == 1 || strideC % 4 == 0) && (k.Emulated || c % (outMode == 0 ? 16UL : 8UL) == 0) ? 1 : 0;

        var (bm, bn) = TileSize(t);
        int tiles = ((m + bm - 1) / bm) * ((n + bn - 1) / bn);
        var config = new KernelConfig(new Index3D(tiles, 1, batch * splits), new Index3D(Shape(t).Threads, 1, 1),
            SharedMemoryConfig.RequestDynamic<byte>(SharedBytes(k.Emulated, t)));
        long total = (long)batch * m * n;
        return new(t, splits, config, epilogue, p, splits == 1 ? 0 : total * splits, Launch.Flat(k, total), k.Emulated);
    }
}
