// Hopper kernels of FlashAttentionHalf (compute capability 9.0): the forward (head dims 64 and 128, WgmmaHeadDims) and the
// backward's dK/dV and dQ kernels (head dim 128, below). Forward picks the forward at head dim 128, same inputs, masks and
// outputs (o and logSumExp, which the backward consumes). Measured
// on the H100 (benchmarks/results/nvidia-h100-80gb/attention-wgmma.md), d 128 causal, seq 2048/4096/8192: 212/265/297
// TFLOP/s against mma.sync's 190/227/245 (SDPA 308/460/589); at d 64 it was slower than mma.sync (160/198/219 against
// 192/221/245), so d 64 keeps the mma.sync kernel. FlashAttention-3's ideas without TMA or warp specialization:
//   * a group of 2 warpgroups (256 threads) owns 128 query rows of one (batch, head), 64 per warpgroup; every thread issues
//     cp.async. Q sits in shared memory; K and V tiles of WgmmaKeys (128) keys stream through a ring of slots (2 by default;
//     up to 3 at d 128, 4 at d 64: WgmmaMaxStages), filled stages - 1 tiles ahead. All tiles use
//     the 128-byte-swizzle layout of Gemm's wgmma tiles (Gemm.WgChunkOffset: 64-element panels, d contiguous).
//   * S = Q·Kᵀ: wgmma m64n128k16 per k16 step of d, A (Q) and B (K) K-major from shared-memory descriptors (Gemm.WgDesc);
//     O += P·V: wgmma m64nDk16 per 16 keys with A = P from registers (the S accumulator fragment, rows 16·warp + lane/4 (+8),
//     columns 8i + 2·(lane%4) (+1), pairs into the A fragment once rounded to 16 bits) and B = V MN-major (transpose flag).
//   * the accumulators are function-scope PTX registers (sacc, oacc) named in the instruction text, as in Gemm: S is read
//     out into locals for the online softmax (base 2, row max by quad shuffles, masks only on tiles that need them), O is
//     rescaled in place by one inline-asm block per tile and read out at the end.
//   * intra-warpgroup overlap: iteration t issues S_t = Q·K_tᵀ, then O += P_(t-1)·V_(t-1), waits for S_t only, runs the
//     softmax of tile t while the tensor cores do P·V, then waits for it and rescales O. So each iteration loads K_(t+stages-1)
//     and V_(t+stages-2) (one cp.async group, issued after the wgmma: those slots are free by then, and the copies stay off
//     the path to the tensor cores; straight cp.async from addresses computed once where the tile is whole); the loop ends
//     with the last P·V. ptxas serializes all wgmma of a kernel if
//     a register one reads is redefined while it may run, hence O is rescaled before P·V is issued and P is packed after
//     P·V completes.
// Backward dK/dV (BackwardKeyValueWgmma128Kernel; head dim 128): the mma.sync dK/dV kernel's
// math and loop (every query head of the kv head, query tiles of 64 rows, the same tile skipping for sorted packed ids, no
// atomics) on wgmma: a group of 2 warpgroups owns 128 keys, 64 per warpgroup; K and V stay in shared memory, Q and dO tiles
// are double-buffered by cp.async, all in the 128-byte-swizzle layout. Per tile: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ as m64n64k16 SS
// wgmma (keys are the accumulator rows), P and dS recomputed in registers from the tile's lse and delta (shared memory),
// then dV += Pᵀ·dO and dK += dSᵀ·Q as m64n128k16 with Pᵀ, dSᵀ from registers (RS) and dO, Q MN-major; the step waits for
// them before its registers are redefined. Accumulators tacc, pacc (32 each), kacc, vacc (64 each): 254 registers, no spills
// (ptxas 12.4). H100, d 128 causal, seq 2048/4096/8192, whole backward: 134/187/205 TFLOP/s against 110/145/152 with the
// mma.sync dK/dV kernel (benchmarks/results/nvidia-h100-80gb/attention-wgmma-bwd-run1.txt). Backward takes it at d 128
// except for packed rows with sorted ids (mma.sync's 32-row query tiles skip more).
// Backward dQ (BackwardQueryWgmma128Kernel; with the dK/dV one, whole backward at d 128 causal 150/224/252 TFLOP/s at seq
// 2048/4096/8192 on the H100, attention-run6.txt): the forward's shape
// (2 warpgroups x 64 query rows, Q and dO resident, 64-key K/V tiles double-buffered); per tile S = Q·Kᵀ and dP = dO·Vᵀ
// (m64n64k16 SS), P and dS from the rows' lse and delta (registers), dQ += dS·K (m64n128k16, dS from registers, K MN-major);
// no tile skipping. It reuses the dK/dV kernel's sites (S, dP in tacc, pacc; dQ in kacc): 160 registers, no spills.
// CPU accelerator: the Emulated platform keeps each thread's accumulators in shared memory (after the per-warp scratch) and
// computes them from the decoded descriptors (Gemm.WgmmaEmulated) and, for P·V, from the warp's A fragments exchanged through
// its scratch, so the tests cover descriptors, swizzles and fragment layouts. Bodies: tools/gen_flash_wgmma.py.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace IlgpuTune.Kernels;

public static partial class FlashAttentionHalf
{
    /// <summary>Head dims with a wgmma (Hopper) forward.</summary>
    public static IReadOnlyList<int> WgmmaHeadDims { get; } = [64, 128];

    // The wgmma sites of the forward (PTX of each type in FlashAttentionHalf.Wgmma.g.cs).
    internal interface IFlashWgmmaHalf : IFlashHalf
    {
        void WgmmaSPtx(int keys, bool accumulate, ulong descA, ulong descB);
        void WgmmaPVPtx(int keys, int d, uint a0, uint a1, uint a2, uint a3, ulong descB);
        void WgmmaScorePtx(int which, bool accumulate, ulong descA, ulong descB);
        void WgmmaGradPtx(int which, uint a0, uint a1, uint a2, uint a3, ulong descB);
    }

    // Accumulators of this thread: S (keys/2 floats) and O (d/2); the CPU emulation keeps them at smf[accOff..], S first.
    internal interface IFlashWgmma
    {
        void FenceProxyAsync();
        void WgFence();
        void WgCommit();
        void WgWait(int pending);
        void WgDeclare(int d, ArrayView<float> smf, int accOff);
        // S (+)= A·Bᵀ over one k16 step (accumulate false: S = A·Bᵀ).
        void WgmmaS<TH>(int keys, bool accumulate, ulong descA, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf, int accOff)
            where TH : struct, IFlashWgmmaHalf;
        // O += P·V over 16 keys: P as the warp's A fragment (a0..a3), V through its descriptor.
        void WgmmaPV<TH>(int keys, int d, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int accOff, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf;
        void ReadS(int keys, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3);
        void ScaleO(int keys, int d, float lo, float hi, ArrayView<float> smf, int accOff);
        void ReadO(int keys, int d, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3);

        // Backward kernels (head dim 128): scores Sᵀ, dPᵀ (or S, dP: WgmmaBackwardQueries/2 floats each) and gradients dK, dV
        // (or dQ: 64 each); `which` 0 = S or dK/dQ, 1 = dP or dV. The CPU emulation keeps them at smf[accOff..] in that order.
        void WgDeclareBackward(ArrayView<float> smf, int accOff);
        // Score (+)= A·Bᵀ, m64n64k16, A and B K-major (accumulate false: overwrite).
        void WgmmaScore<TH>(int which, bool accumulate, ulong descA, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf, int accOff)
            where TH : struct, IFlashWgmmaHalf;
        // Gradient += A·B, m64n128k16: A (dSᵀ, Pᵀ or dS) as the warp's A fragment, B (Q, dO or K) MN-major through its descriptor.
        void WgmmaGrad<TH>(int which, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int accOff, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf;
        void ReadScore(int which, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3);
        void ReadGrad(int which, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3);
    }

    internal partial struct Ptx
    {
        public void FenceProxyAsync() => default(Gemm.Ptx).FenceProxyAsync();
        public void WgFence() => default(Gemm.Ptx).WgFence();
        public void WgCommit() => default(Gemm.Ptx).WgCommit();
        public void WgWait(int pending) => default(Gemm.Ptx).WgWait(pending);

        public void WgmmaS<TH>(int keys, bool accumulate, ulong descA, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf, int accOff)
            where TH : struct, IFlashWgmmaHalf
        {
            if (CudaAsm.IsSupported) default(TH).WgmmaSPtx(keys, accumulate, descA, descB);
        }

        public void WgmmaPV<TH>(int keys, int d, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int accOff, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf
        {
            if (CudaAsm.IsSupported) default(TH).WgmmaPVPtx(keys, d, a0, a1, a2, a3, descB);
        }

        public void WgmmaScore<TH>(int which, bool accumulate, ulong descA, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf, int accOff)
            where TH : struct, IFlashWgmmaHalf
        {
            if (CudaAsm.IsSupported) default(TH).WgmmaScorePtx(which, accumulate, descA, descB);
        }

        public void WgmmaGrad<TH>(int which, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int accOff, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf
        {
            if (CudaAsm.IsSupported) default(TH).WgmmaGradPtx(which, a0, a1, a2, a3, descB);
        }
    }

    internal partial struct Emulated : IFlashWgmma
    {
        public void FenceProxyAsync() { }
        public void WgFence() { }
        public void WgCommit() { }
        public void WgWait(int pending) { }

        public void WgDeclare(int d, ArrayView<float> smf, int accOff)
        {
            for (int j = 0; j < d / 2; j++) smf[accOff + WgmmaKeys / 2 + j] = 0f;
        }

        public void WgmmaS<TH>(int keys, bool accumulate, ulong descA, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf, int accOff)
            where TH : struct, IFlashWgmmaHalf
        {
            if (!accumulate)
                for (int j = 0; j < keys / 2; j++) smf[accOff + j] = 0f;
            Gemm.WgmmaEmulated<TH>(keys, false, false, descA, descB, sm, smf, accOff);
        }

        public void WgmmaPV<TH>(int keys, int d, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int accOff, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf =>
            WgmmaRs<TH>(d, a0, a1, a2, a3, descB, sm, smf, accOff + keys / 2, scratch, warpScratch);

        // D[at..] += A·B, m64nNk16 with A from registers. Lane l holds A rows l/4 (a0: k 2(l%4), +1; a2: +8) and l/4 + 8
        // (a1, a3) of the warp's 16 rows, as mma.sync's A; B MN-major through its descriptor.
        static void WgmmaRs<TH>(int n, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int at, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf
        {
            int lane = Warp.LaneIdx;
            Warp.Barrier(); // the previous emulated instruction has finished reading the scratch
            scratch[warpScratch + 4 * lane] = a0; scratch[warpScratch + 4 * lane + 1] = a1;
            scratch[warpScratch + 4 * lane + 2] = a2; scratch[warpScratch + 4 * lane + 3] = a3;
            Warp.Barrier();
            for (int i = 0; i < n / 8; i++)
                for (int e = 0; e < 4; e++)
                {
                    int row = lane / 4 + 8 * (e / 2), col = 8 * i + 2 * (lane % 4) + e % 2;
                    float sum = 0f;
                    for (int k = 0; k < 16; k++)
                    {
                        uint word = scratch[warpScratch + 4 * (4 * (row % 8) + (k % 8) / 2) + row / 8 + 2 * (k / 8)];
                        sum += default(TH).ToFloat((ushort)(word >> (16 * (k % 2)))) * default(TH).ToFloat(sm[Gemm.DescElement(descB, true, col, k)]);
                    }
                    smf[at + 4 * i + e] += sum;
                }
        }

        public void ReadS(int keys, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)
        {
            v0 = smf[accOff + 4 * i]; v1 = smf[accOff + 4 * i + 1]; v2 = smf[accOff + 4 * i + 2]; v3 = smf[accOff + 4 * i + 3];
        }

        public void ScaleO(int keys, int d, float lo, float hi, ArrayView<float> smf, int accOff)
        {
            for (int j = 0; j < d / 2; j++) smf[accOff + keys / 2 + j] *= (j & 2) == 0 ? lo : hi;
        }

        public void ReadO(int keys, int d, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)
        {
            int at = accOff + keys / 2 + 4 * i;
            v0 = smf[at]; v1 = smf[at + 1]; v2 = smf[at + 2]; v3 = smf[at + 3];
        }

        // Backward kernels: S at accOff, dP, then the gradients (WgmmaBackwardHeadDim / 2 each).
        public void WgDeclareBackward(ArrayView<float> smf, int accOff)
        {
            for (int j = 0; j < WgmmaBackwardHeadDim; j++) smf[accOff + WgmmaBackwardQueries + j] = 0f;
        }

        public void WgmmaScore<TH>(int which, bool accumulate, ulong descA, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf, int accOff)
            where TH : struct, IFlashWgmmaHalf
        {
            int at = accOff + which * WgmmaBackwardQueries / 2;
            if (!accumulate)
                for (int j = 0; j < WgmmaBackwardQueries / 2; j++) smf[at + j] = 0f;
            Gemm.WgmmaEmulated<TH>(WgmmaBackwardQueries, false, false, descA, descB, sm, smf, at);
        }

        public void WgmmaGrad<TH>(int which, uint a0, uint a1, uint a2, uint a3, ulong descB, ArrayView<ushort> sm, ArrayView<float> smf,
            int accOff, ArrayView<uint> scratch, int warpScratch) where TH : struct, IFlashWgmmaHalf =>
            WgmmaRs<TH>(WgmmaBackwardHeadDim, a0, a1, a2, a3, descB, sm, smf,
                accOff + WgmmaBackwardQueries + which * WgmmaBackwardHeadDim / 2, scratch, warpScratch);

        public void ReadScore(int which, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)
        {
            int at = accOff + which * WgmmaBackwardQueries / 2 + 4 * i;
            v0 = smf[at]; v1 = smf[at + 1]; v2 = smf[at + 2]; v3 = smf[at + 3];
        }

        public void ReadGrad(int which, int i, ArrayView<float> smf, int accOff, out float v0, out float v1, out float v2, out float v3)
        {
            int at = accOff + WgmmaBackwardQueries + which * WgmmaBackwardHeadDim / 2 + 4 * i;
            v0 = smf[at]; v1 = smf[at + 1]; v2 = smf[at + 2]; v3 = smf[at + 3];
        }
    }

    // Copies `rows` token rows (row0.., zeros past seq) of one head of a [tokens, heads, 8·chunks] tensor into a tile at byte
    // offset tileOff in the wgmma layout (Gemm.WgChunkOffset); `threads` threads share the copies.
    static void LoadRowsWg<TP>(ArrayView<ushort> g, ulong gPtr, ArrayView<ushort> sm, uint smBase, int tileOff, int rows, int chunks,
        long tokenBase, int row0, int heads, int head, Params p, int threads) where TP : struct, IFlashPlatform
    {
        for (int idx = Group.IdxX; idx < rows * chunks; idx += threads)
        {
            int r = idx / chunks, c = idx - r * chunks;
            int dst = tileOff + Gemm.WgChunkOffset(r, c, rows);
            int row = row0 + r;
            long gi = ((tokenBase + row) * heads + head) * (chunks * 8) + c * 8;
            if (row >= p.Seq)
                for (int e = 0; e < 8; e++) sm[dst / 2 + e] = 0;
            else if (p.Vec != 0) default(TP).CopyChunk(g, gPtr, gi, sm, smBase, dst);
            else
                for (int e = 0; e < 8; e++) sm[dst / 2 + e] = g[gi + e];
        }
    }

    // One K or V tile (WgmmaKeys rows from row0) as LoadRowsWg, with straight cp.async when the tile is in range and aligned:
    // rows threads/chunks apart (a multiple of 8, so the swizzle term stays) are a constant step apart in both memories.
    static void LoadKeysWg<TP>(ArrayView<ushort> g, ulong gPtr, ArrayView<ushort> sm, uint smBase, int tileOff, int chunks,
        long tokenBase, int row0, int heads, int head, Params p, int threads) where TP : struct, IFlashPlatform
    {
        if (p.Vec == 0 || row0 + WgmmaKeys > p.Seq)
        {
            LoadRowsWg<TP>(g, gPtr, sm, smBase, tileOff, WgmmaKeys, chunks, tokenBase, row0, heads, head, p, threads);
            return;
        }
        int tid = Group.IdxX, r = tid / chunks, c = tid - r * chunks, rowStep = threads / chunks;
        int dst = tileOff + Gemm.WgChunkOffset(r, c, WgmmaKeys);
        long gi = ((tokenBase + row0 + r) * heads + head) * (chunks * 8) + c * 8, step = (long)rowStep * heads * chunks * 8;
        for (int row = r; row < WgmmaKeys; row += rowStep)
        {
            default(TP).CopyChunk(g, gPtr, gi, sm, smBase, dst);
            dst += rowStep * 128;
            gi += step;
        }
    }

    // Forward's hook: the wgmma kernel on a compute capability 9.0 GPU at head dim 128 (at 64 mma.sync measured faster),
    // unless the registry's options turn it off (KernelOptions.WgmmaAttentionForward).
    static bool WgmmaForwardApplies(KernelRegistry k, int headDim) =>
        k.Options.WgmmaAttentionForward && k.Wgmma && headDim == 128;

    // K/V slots (each a 128-key tile of K and one of V) at each head dim: the most that fit 227 KB with two warpgroups' Q.
    internal static int WgmmaMaxStages(int headDim) => headDim <= 64 ? 4 : 3;

    // Forward through the wgmma kernel, `warpgroups` (1 or 2) of 64 query rows per group, `stages` K/V slots (2 ..
    // WgmmaMaxStages; 0: 2, which matched or beat 3 on the H100 at d 128: 297 vs 290 TFLOP/s at seq 8192 causal); other
    // arguments as in Forward.
    internal static void ForwardWgmma(KernelRegistry k, HalfType type, Attention.Inputs<ushort> x, Attention.Sizes s,
        Attention.Output output,
        int warpgroups, int stages = 0)
    {
        Validate(s);
        if (Windowed(s)) throw new ArgumentException("the wgmma kernels have no sliding window", nameof(s));
        var (q, kk, v, segmentIds, _) = x;
        var (o, logSumExp) = output;
        int seq = s.Seq, headDim = s.HeadDim;
        bool causal = s.Causal;
        if (!WgmmaHeadDims.Contains(headDim))
            throw new ArgumentException($"wgmma flash attention supports head dims {string.Join('/', WgmmaHeadDims)}, got {headDim}", nameof(headDim));
        ArgumentOutOfRangeException.ThrowIfLessThan(warpgroups, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(warpgroups, 2);
        if (stages == 0) stages = 2;
        ArgumentOutOfRangeException.ThrowIfLessThan(stages, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(stages, WgmmaMaxStages(headDim));
        Attention.Need(s.QueryElements, (nameof(q), q.Length), (nameof(o), o.Length));
        Attention.Need(s.KeyValueElements, (nameof(kk), kk.Length), (nameof(v), v.Length));
        Attention.Need(s.ScoreRows, (nameof(logSumExp), logSumExp.Length));
        if (segmentIds.Length != 0) Attention.Need(s.Tokens, (nameof(segmentIds), segmentIds.Length));
        if (s.Tokens == 0) return;
        int rows = 64 * warpgroups, threads = 128 * warpgroups;
        int tileBytes = 1024 + (rows + 2 * stages * WgmmaKeys) * headDim * 2; // 1 KB to align the tiles to 1024
        var p = MakeParams(k, s, causal, segmentIds, false, q, kk, v, default, out _, tileBytes); // masks every tile: no skipping
        int smem = k.IsEmulated ? (p.ScratchOffset + threads / 32 * ScratchPerWarp + threads * (WgmmaKeys / 2 + headDim / 2)) * 4 : tileBytes;
        // The CUDA limit is raised once, for the largest configuration.
        int maxSmem = 1024 + (128 + 2 * WgmmaMaxStages(headDim) * WgmmaKeys) * headDim * 2;
        var kernel = Load<Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, IntView, Params,
            int, FloatView, FloatView>>(k, "ForwardWgmma", headDim, type, maxSmem);
        var config = new KernelConfig(new Index3D(s.Batch * s.NumHeads, (seq + rows - 1) / rows, 1), new Index3D(threads, 1, 1),
            SharedMemoryConfig.RequestDynamic<byte>(smem));
        kernel(k.Stream, config, q, kk, v, segmentIds, p, stages, o, logSumExp);
    }

    // Backward's hook: the wgmma dK/dV kernel on a compute capability 9.0 GPU at head dim 128, unless the registry's options
    // turn it off (KernelOptions.WgmmaAttentionBackward).
    static bool WgmmaBackwardApplies(KernelRegistry k, int headDim) =>
        k.Options.WgmmaAttentionBackward && k.Wgmma &&
        headDim == WgmmaBackwardHeadDim;

    // dK, dV[batch*seq, numKvHeads, 128] (overwritten) through the wgmma kernel: 2 warpgroups x 64 keys per group; inputs as the
    // mma.sync dK/dV kernel's (dOHalf, delta from Backward).
    static void BackwardKeyValueWgmma(KernelRegistry k, HalfType type, ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v,
        ArrayView<ushort> dOHalf, IntView segmentIds, FloatView logSumExp, FloatView delta, Attention.Sizes s, bool causal, bool segmentsSorted,
        FloatView dK, FloatView dV)
    {
        if (s.HeadDim != WgmmaBackwardHeadDim)
            throw new ArgumentException($"the wgmma dK/dV kernel supports head dim {WgmmaBackwardHeadDim}, got {s.HeadDim}", nameof(s));
        const int Threads2 = 256, D = WgmmaBackwardHeadDim;
        // 1 KB to align the tiles to 1024 | K, V | Q, dO x2 | row statistics x2
        int tileBytes = 1024 + (2 * WgmmaBackwardKeys + 4 * WgmmaBackwardQueries) * D * 2 + 6 * WgmmaBackwardQueries * 4;
        var p = MakeParams(k, s, causal, segmentIds, segmentsSorted, q, kk, v, dOHalf, out _, tileBytes);
        int smem = k.IsEmulated ? (p.ScratchOffset + Threads2 / 32 * ScratchPerWarp + Threads2 * (WgmmaBackwardQueries + D)) * 4 : tileBytes;
        var kernel = Load<Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
            IntView, FloatView, FloatView, Params, FloatView, FloatView>>(k, "BackwardKeyValueWgmma", D, type, tileBytes);
        var config = new KernelConfig(new Index3D(s.Batch * s.NumKvHeads, (s.Seq + WgmmaBackwardKeys - 1) / WgmmaBackwardKeys, 1),
            new Index3D(Threads2, 1, 1), SharedMemoryConfig.RequestDynamic<byte>(smem));
        kernel(k.Stream, config, q, kk, v, dOHalf, segmentIds, logSumExp, delta, p, dK, dV);
    }

    // dQ[batch*seq, numHeads, 128] (overwritten) through the wgmma kernel: 2 warpgroups x 64 query rows per group, 64-key
    // tiles; no tile skipping (Backward keeps sorted packed rows on mma.sync); inputs as in BackwardKeyValueWgmma.
    static void BackwardQueryWgmma(KernelRegistry k, HalfType type, ArrayView<ushort> q, ArrayView<ushort> kk, ArrayView<ushort> v,
        ArrayView<ushort> dOHalf, IntView segmentIds, FloatView logSumExp, FloatView delta, Attention.Sizes s, bool causal, FloatView dQ)
    {
        if (s.HeadDim != WgmmaBackwardHeadDim)
            throw new ArgumentException($"the wgmma dQ kernel supports head dim {WgmmaBackwardHeadDim}, got {s.HeadDim}", nameof(s));
        const int Threads2 = 256, D = WgmmaBackwardHeadDim, Rows = 128;
        // 1 KB to align the tiles to 1024 | Q, dO | K, V x2
        int tileBytes = 1024 + (2 * Rows + 4 * WgmmaBackwardQueries) * D * 2;
        var p = MakeParams(k, s, causal, segmentIds, false, q, kk, v, dOHalf, out _, tileBytes);
        int smem = k.IsEmulated ? (p.ScratchOffset + Threads2 / 32 * ScratchPerWarp + Threads2 * (WgmmaBackwardQueries + D)) * 4 : tileBytes;
        var kernel = Load<Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
            IntView, FloatView, FloatView, Params, FloatView>>(k, "BackwardQueryWgmma", D, type, tileBytes);
        var config = new KernelConfig(new Index3D(s.Batch * s.NumHeads, (s.Seq + Rows - 1) / Rows, 1), new Index3D(Threads2, 1, 1),
            SharedMemoryConfig.RequestDynamic<byte>(smem));
        kernel(k.Stream, config, q, kk, v, dOHalf, segmentIds, logSumExp, delta, p, dQ);
    }

    // Whether key col is visible to query row (segment segRow) of this batch row: in range, causal, same packed sample.
    static bool Visible(IntView segmentIds, Params p, long tokenBase, int row, int segRow, int col) =>
        col < p.Seq && (p.Causal == 0 || col <= row) && (p.Segmented == 0 || segmentIds[tokenBase + col] == segRow);
}
