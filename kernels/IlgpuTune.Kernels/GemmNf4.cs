// Tensor-core GEMM with a 4-bit weight as the B operand, dequantized in the load stage (no 16-bit workspace): the
// products of bitsandbytes' Linear4bit in QLoRA, with W [out, in] row-major, NF4/FP4 packed two per byte (even element in
// the high nibble), blocks of `blocksize` consecutive elements of the flattened weight, double-quantized absmax
// (absmax[b] = code8[qabsmax[b]] * absmax2[b / 256] + offset, as Nf4.DequantizeHalfNested):
//   NT: C[m, out] = alpha * A[m, in] · dequant(W)ᵀ (+ bias) (+ C)   forward, y = x·Wᵀ
//   NN: C[m, in]  = alpha * A[m, out] · dequant(W)  (+ bias) (+ C)   input grad, dX = dY·W
// The kernels are Gemm's (gen_gemm.py, NF4_TILES), with B's stage tile filled differently: each thread reads one 32-bit
// word of codes per 16-byte chunk (8 consecutive elements of the flat weight, in one block when blocksize >= 8) and its
// block's scale, converts them to 8 bf16/fp16 values exactly as DequantizeHalfNested would (code4[c] * absmax in fp32,
// rounded to nearest even) and stores them to the chunk's swizzled place with one 16-byte st.shared; ldmatrix / wgmma then
// read the same bits as from a dequantized copy, so a result equals dequantize-then-Gemm with the same tile to the bit.
// mma.sync tiles fetch the words of K tile kt+Stages-1 before the mma of the first k16 step and store them after it (the
// tensor cores hide the global loads); wgmma tiles fetch and store right after issuing the asynchronous wgmma of tile kt.
// Chunks that the fast path cannot take (tails, in % 8 != 0, blocksize < 8, a misaligned packed buffer) are dequantized
// element by element, zero-filled past the matrix. Plain (not double-quantized) absmax weights keep the workspace path.
// CPU reference: Nf4.DequantizeBf16Cpu/F16Cpu of the weight, then Gemm.BatchedCpu.
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Numerics;

namespace IlgpuTune.Kernels;

/// <summary>
/// A double-quantized 4-bit weight [Rows = out, Cols = in] as the B operand of <see cref="Gemm.RunNf4(KernelRegistry, GemmLayout, HalfType, ArrayView{ushort}, in Nf4Operand, FloatView, int, float, bool, FloatView)"/>: packed
/// [(n+1)/2] bytes, qabsmax [blocks], absmax2 [ceil(blocks/256)], offset [1], code8 [256], code4 [16].
/// </summary>
public readonly record struct Nf4Operand(ArrayView<byte> Packed, ArrayView<byte> QAbsmax, FloatView Absmax2, FloatView Offset,
    FloatView Code8, FloatView Code4, int Rows, int Cols, int BlockSize);

public static partial class Gemm
{
    /// <summary>A 16-bit type the fused NF4 load rounds dequantized values to.</summary>
    internal interface INf4Half : IHalf
    {
        ushort Round(float x);
    }

    internal partial struct Bf16 : INf4Half
    {
        public ushort Round(float x) => Cast.FloatToBf16(x);
    }

    internal partial struct F16 : INf4Half
    {
        public ushort Round(float x) => Cast.FloatToF16(x);
    }

    /// <summary>The packed weight's views inside a kernel: Words is Bytes as 32-bit words (8 codes), Offset read once.</summary>
    internal readonly struct Nf4Source
    {
        public readonly ArrayView<uint> Words;
        public readonly ArrayView<byte> Bytes, QAbsmax;
        public readonly FloatView Absmax2, Code8, Code4;
        public readonly float Offset;
        public readonly int Log2Block;

        Nf4Source(ArrayView<uint> words, ArrayView<byte> bytes, ArrayView<byte> qabsmax, FloatView absmax2, float offset, FloatView code8,
            FloatView code4, int log2Block)
        {
            Words = words; Bytes = bytes; QAbsmax = qabsmax; Absmax2 = absmax2; Offset = offset; Code8 = code8; Code4 = code4;
            Log2Block = log2Block;
        }

        public static Nf4Source Of(ArrayView<uint> words, ArrayView<byte> bytes, ArrayView<byte> qabsmax, FloatView absmax2, FloatView offset,
            FloatView code8, FloatView code4, int log2Block) => new(words, bytes, qabsmax, absmax2, offset[0], code8, code4, log2Block);
    }

    // absmax of block b, rebuilt from the double quantization as Nf4.DequantizeHalfNested does (mul.rn: no fma with the add)
    static float Nf4Scale(Nf4Source q, long b) =>
        Nf4.MulRn(q.Code8[(int)q.QAbsmax[b]], q.Absmax2[b / Nf4Codec.NestedBlockSize]) + q.Offset;

    // 8 codes of word w (byte i: elements 2i high nibble, 2i+1 low) times absmax s, rounded, as one 16-byte shared store
    static void Nf4Chunk<TH, TP>(Nf4Source q, ArrayView<ushort> sm, uint smBase, int dst, uint w, float s)
        where TH : struct, INf4Half where TP : struct, IPlatform =>
        default(TP).StoreShared4(sm, smBase, dst, Nf4Pair<TH>(q, w, 0, s), Nf4Pair<TH>(q, w, 8, s), Nf4Pair<TH>(q, w, 16, s),
            Nf4Pair<TH>(q, w, 24, s));

    static uint Nf4Pair<TH>(Nf4Source q, uint w, int shift, float s) where TH : struct, INf4Half
    {
        int b = (int)((w >> shift) & 0xFF);
        return default(TH).Round(q.Code4[b >> 4] * s) | ((uint)default(TH).Round(q.Code4[b & 15] * s) << 16);
    }

    // element i of the flat weight, dequantized and rounded
    static ushort Nf4Element<TH>(Nf4Source q, long i) where TH : struct, INf4Half
    {
        int v = q.Bytes[i >> 1];
        return default(TH).Round(q.Code4[(i & 1) == 0 ? v >> 4 : v & 15] * Nf4Scale(q, i >> q.Log2Block));
    }

    // A rows x (8·chunks) tile of the dequantized weight (cols columns), element (row0 + r, col0 + col), into shared memory at
    // byte offset tileOff, as LoadTile lays it out; out-of-range elements become zero. vec: whole words may be read.
    static void LoadTileNf4<TH, TP>(Nf4Source q, ArrayView<ushort> sm, uint smBase, int tileOff, int rows, int chunks, int rowExt, int cols,
        int row0, int col0, int vec, int threads, bool panels) where TH : struct, INf4Half where TP : struct, IPlatform
    {
        for (int idx = Group.IdxX; idx < rows * chunks; idx += threads)
        {
            int r = idx / chunks, c = idx - r * chunks;
            int dst = tileOff + (panels ? WgChunkOffset(r, c, rows) : ChunkOffset(r, c, chunks));
            int gr = row0 + r, gc = col0 + c * 8;
            long gi = (long)gr * cols + gc;
            int valid = gr < rowExt ? Math.Max(0, Math.Min(cols - gc, 8)) : 0;
            if (valid == 8 && vec != 0) Nf4Chunk<TH, TP>(q, sm, smBase, dst, q.Words[gi >> 3], Nf4Scale(q, gi >> q.Log2Block));
            else
                for (int e = 0; e < 8; e++) sm[dst / 2 + e] = e < valid ? Nf4Element<TH>(q, gi + e) : (ushort)0;
        }
    }

    // LoadStage with B the NF4 weight: NT's B tile is [bn rows (out)][bk], NN's [bk rows (out)][bn]; W's row length is K (NT)
    // or N (NN).
    static void LoadStageNf4<TH, TP>(ArrayView<ushort> a, Nf4Source q, ArrayView<ushort> sm, Params p, uint smBase, int stageOff, int kt,
        int m0, int n0, long aOff, bool aKMajor, bool bKMajor, int bm, int bn, int bk, int threads, bool panels)
        where TH : struct, INf4Half where TP : struct, IPlatform
    {
        int k0 = kt * bk;
        if (aKMajor) LoadTile<TP>(a, p.APtr, sm, smBase, stageOff, bm, bk / 8, p.M, p.K, m0, k0, aOff, p.VecA, threads, panels);
        else LoadTile<TP>(a, p.APtr, sm, smBase, stageOff, bk, bm / 8, p.K, p.M, k0, m0, aOff, p.VecA, threads, panels);
        int bTile = stageOff + bm * bk * 2;
        if (bKMajor) LoadTileNf4<TH, TP>(q, sm, smBase, bTile, bn, bk / 8, p.N, p.K, n0, k0, p.VecB, threads, panels);
        else LoadTileNf4<TH, TP>(q, sm, smBase, bTile, bk, bn / 8, p.K, p.N, k0, n0, p.VecB, threads, panels);
    }

    // ---- launchers ----

    /// <summary>
    /// c[m, N] fp32 = alpha · a[m, K] · op(dequant(w)) (+ bias[N]) (+ c): NT (N = w.Rows, K = w.Cols) or NN (N = w.Cols,
    /// K = w.Rows); a in <paramref name="type"/> bits, w dequantized to that type in the load stage.
    /// </summary>
    public static void RunNf4(KernelRegistry k, GemmLayout layout, HalfType type, ArrayView<ushort> a, in Nf4Operand w, FloatView bias, int m,
        float alpha, bool accumulate, FloatView c) =>
        LaunchNf4(k, layout, type, a, w, bias, m, alpha, accumulate, 0, c, default, null, -1);

    /// <summary>The same with a 16-bit output in <paramref name="cType"/> bits.</summary>
    public static void RunNf4(KernelRegistry k, GemmLayout layout, HalfType type, ArrayView<ushort> a, in Nf4Operand w, FloatView bias, int m,
        float alpha, bool accumulate, HalfType cType, ArrayView<ushort> c) =>
        LaunchNf4(k, layout, type, a, w, bias, m, alpha, accumulate, cType == HalfType.BFloat16 ? 1 : 2, default, c, null, -1);

    /// <summary>The tile and split count Nf4 picks: Choose's, with tiles that have no fused kernel moved to the nearest one.</summary>
    internal static (TileConfig Tile, int Splits) ChooseNf4(KernelRegistry k, int m, int n, int kDim)
    {
        var (tile, splits) = Choose(k, 1, m, n, kDim);
        if (Array.IndexOf(Nf4Tiles, tile) < 0) tile = Shape(tile).Wgmma ? TileConfig.W2N128 : TileConfig.T2x2;
        return (tile, splits);
    }

    /// <summary>The fused kernel of one configuration (layout NT or NN, a tile of <see cref="Nf4Tiles"/>).</summary>
    internal static ref readonly KernelDeclaration Nf4Declaration(GemmLayout layout, HalfType type, TileConfig tile, bool emulated) =>
        ref Nf4Declarations[Nf4Index(layout, type, tile, emulated)];

    static int Nf4Index(GemmLayout layout, HalfType type, TileConfig tile, bool emulated)
    {
        int t = Array.IndexOf(Nf4Tiles, tile);
        if (layout is not (GemmLayout.NT or GemmLayout.NN) || t < 0)
            throw new ArgumentException($"no fused NF4 GEMM for layout {layout}, tile {tile}");
        return (((int)layout * 2 + (int)type) * Nf4Tiles.Length + t) * 2 + (emulated ? 1 : 0);
    }

    static readonly KernelDeclaration[] Nf4Declarations = DeclareNf4();

    static KernelDeclaration[] DeclareNf4()
    {
        var all = new KernelDeclaration[2 * 2 * Nf4Tiles.Length * 2];
        foreach (var layout in (GemmLayout[])[GemmLayout.NT, GemmLayout.NN])
            foreach (var type in Enum.GetValues<HalfType>())
                foreach (var tile in Nf4Tiles)
                    foreach (bool emulated in (bool[])[false, true])
                        all[Nf4Index(layout, type, tile, emulated)] = new($"gemm.nf4.{layout}.{type}.{tile}",
                            typeof(Gemm).GetMethod($"{layout}Nf4Kernel{tile}", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                                .MakeGenericMethod(type == HalfType.BFloat16 ? typeof(Bf16) : typeof(F16), emulated ? typeof(Emulated) : typeof(Ptx)),
                            SharedBytes(emulated, tile), Shape(tile).Wgmma ? KernelTarget.Sm90a : KernelTarget.Sm80, PtxPasses.PromoteLocals);
        return all;
    }

    /// <summary>Every fused NF4 kernel for CUDA (the ahead-of-time PTX catalogue).</summary>
    internal static IEnumerable<KernelDeclaration> Nf4CudaDeclarations() => Nf4Declarations.Where((_, i) => i % 2 == 0);

    // outMode: 0 fp32 (cF), 1 bf16, 2 f16 (cH). tile/splits: forced by tests and the bench; null/-1 = ChooseNf4.
    internal static void LaunchNf4(KernelRegistry k, GemmLayout layout, HalfType type, ArrayView<ushort> a, in Nf4Operand w, FloatView bias,
        int m, float alpha, bool accumulate, int outMode, FloatView cF, ArrayView<ushort> cH, TileConfig? tile, int splits)
    {
        if (layout is not (GemmLayout.NT or GemmLayout.NN)) throw new ArgumentException($"fused NF4 GEMM: layout {layout} (NT or NN expected)", nameof(layout));
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(w.Rows);
        ArgumentOutOfRangeException.ThrowIfNegative(w.Cols);
        if (w.BlockSize < 2 || (w.BlockSize & (w.BlockSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(w), w.BlockSize, "blocksize must be a power of two >= 2");
        int n = layout == GemmLayout.NT ? w.Rows : w.Cols, kDim = layout == GemmLayout.NT ? w.Cols : w.Rows;
        long elements = (long)w.Rows * w.Cols, blocks = Nf4Codec.Blocks(elements, w.BlockSize);
        Launch.Need(a, (long)m * kDim, nameof(a));
        Launch.Need(w.Packed, (elements + 1) / 2, "packed");
        Launch.Need(w.QAbsmax, blocks, "qabsmax");
        Launch.Need(w.Absmax2, Nf4Codec.Blocks(blocks, Nf4Codec.NestedBlockSize), "absmax2");
        Launch.Need(w.Offset, 1, "offset");
        Launch.Need(w.Code8, 256, "code8");
        Launch.Need(w.Code4, 16, "code4");
        if (outMode == 0) Launch.Need(cF, (long)m * n, "c");
        else Launch.Need(cH, (long)m * n, "c");
        bool hasBias = bias.Length > 0;
        if (hasBias) Launch.Need(bias, n, nameof(bias));
        if (m == 0 || n == 0) return;

        var (autoTile, autoSplits) = ChooseNf4(k, m, n, kDim);
        var t = tile ?? autoTile;
        if (Shape(t).Wgmma && !k.IsEmulated && !k.Wgmma)
            throw new ArgumentException($"GEMM tile {t} uses wgmma (sm_90a), which needs a compute capability 9.0 GPU", nameof(tile));
        int bk = Shape(t).Bk;
        int kTiles = (kDim + bk - 1) / bk;
        splits = Math.Clamp(splits > 0 ? splits : autoSplits, 1, Math.Max(1, kTiles));
        int tilesPerSplit = (kTiles + splits - 1) / Math.Max(splits, 1);
        if (kTiles > 0) splits = (kTiles + tilesPerSplit - 1) / tilesPerSplit;

        // Whole words of 8 codes per chunk: rows of whole chunks, blocks of at least 8, a 4-byte-aligned packed buffer.
        bool vecA = kDim % 8 == 0 && (k.IsEmulated || Address(a) % 16 == 0);
        bool vecB = w.Cols % 8 == 0 && w.BlockSize >= 8 && Launch.AlignedTo(w.Packed, 4);
        var words = vecB ? w.Packed.SubView(0, w.Packed.Length / 4 * 4).Cast<uint>() : default;

        var p = new Params
        {
            APtr = Address(a), M = m, N = n, K = kDim, VecA = vecA ? 1 : 0, VecB = vecB ? 1 : 0,
            Splits = splits, TilesPerSplit = tilesPerSplit,
        };
        var epilogue = p;
        epilogue.Alpha = alpha;
        epilogue.Accumulate = accumulate ? 1 : 0;
        epilogue.OutMode = outMode;
        epilogue.HasBias = hasBias ? 1 : 0;
        epilogue.CPtr = outMode == 0 ? Address(cF) : Address(cH);
        epilogue.VecC = n % 4 == 0 && (k.IsEmulated || epilogue.CPtr % (outMode == 0 ? 16UL : 8UL) == 0) ? 1 : 0;

        var (bm, bn) = TileSize(t);
        int tiles = ((m + bm - 1) / bm) * ((n + bn - 1) / bn);
        var kernel = k.Get<Action<KernelConfig, ArrayView<ushort>, ArrayView<uint>, ArrayView<byte>, ArrayView<byte>, FloatView, FloatView,
            FloatView, FloatView, int, FloatView, Params, FloatView, ArrayView<ushort>>>(Nf4Declaration(layout, type, t, k.IsEmulated));
        var config = new KernelConfig(new Index3D(tiles, 1, splits), new Index3D(Shape(t).Threads, 1, 1),
            SharedMemoryConfig.RequestDynamic<byte>(SharedBytes(k.IsEmulated, t)));
        int log2 = System.Numerics.BitOperations.Log2((uint)w.BlockSize);
        if (splits == 1)
        {
            kernel(config, a, words, w.Packed, w.QAbsmax, w.Absmax2, w.Offset, w.Code8, w.Code4, log2, bias, epilogue, cF, cH);
            return;
        }
        // Partials: ws[s][m][n] fp32, raw sums; SplitReduceKernel sums them in split order and applies the epilogue.
        long total = (long)m * n;
        var ws = k.Workspace(total * splits);
        var partial = p;
        partial.StrideC = total;
        partial.SplitStrideC = total;
        partial.Alpha = 1f;
        partial.CPtr = Address(ws);
        partial.VecC = n % 4 == 0 && (k.IsEmulated || partial.CPtr % 16 == 0) ? 1 : 0;
        kernel(config, a, words, w.Packed, w.QAbsmax, w.Absmax2, w.Offset, w.Code8, w.Code4, log2, default, partial, ws, default);
        var reduce = k.Get<Action<KernelConfig, FloatView, FloatView, Params, int, int, FloatView, ArrayView<ushort>>>(
            new("gemm.splitreduce", k.IsEmulated ? SplitReduceKernel<Emulated> : SplitReduceKernel<Ptx>));
        reduce(Launch.Flat(k, total), ws, bias, epilogue, 1, splits, cF, cH);
    }

    // ---- CPU reference: the weight dequantized to the 16-bit type (as the kernels round it), then BatchedCpu in fp32 ----

    /// <summary>c[m, N] = alpha · a · op(dequant(w)) (+ bias) (+ c) on the host: a in 16-bit bits of <paramref name="type"/>,
    /// w given by its packed bytes and already-rebuilt absmax [blocks], dequantized and rounded to that type.</summary>
    public static void Nf4Cpu<T>(GemmLayout layout, HalfType type, ReadOnlySpan<ushort> a, ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax,
        ReadOnlySpan<float> code4, int rows, int cols, int blockSize, ReadOnlySpan<T> bias, int m, T alpha, bool accumulate, Span<T> c)
        where T : System.Numerics.IFloatingPointIeee754<T>
    {
        var wh = new ushort[(long)rows * cols];
        if (type == HalfType.BFloat16) Nf4.DequantizeBf16Cpu(packed, absmax, code4, blockSize, wh);
        else Nf4.DequantizeF16Cpu(packed, absmax, code4, blockSize, wh);
        T Value(ushort h) => T.CreateChecked(type == HalfType.BFloat16 ? Cast.Bf16ToFloat(h) : Cast.F16ToFloat(h));
        var wv = wh.Select(Value).ToArray();
        var av = new T[a.Length];
        for (int i = 0; i < a.Length; i++) av[i] = Value(a[i]);
        int n = layout == GemmLayout.NT ? rows : cols, kDim = layout == GemmLayout.NT ? cols : rows;
        BatchedCpu<T>(layout, av, wv, bias, 1, m, n, kDim, 0, 0, 0, alpha, accumulate, c);
    }
}
