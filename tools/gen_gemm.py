#!/usr/bin/env python3
"""Writes kernels/IlgpuTune.Kernels/Gemm.g.cs: the three GEMM kernel bodies (NT, NN, TN) with the warp's 64x64 tile
fully unrolled (ILGPU 1.5.3 does not unroll loops: 128 accumulators must be distinct locals), and the kernel table.
Run from the repository root: python3 tools/gen_gemm.py"""
import itertools, os

MI, NJ = 4, 8  # m16 tiles and n8 tiles per warp (64x64)
LAYOUTS = {"NT": (True, True), "NN": (True, False), "TN": (False, False)}  # (A K-major, B K-major)
TYPES = ["Bf16", "F16"]
TILES = ["1x1", "2x1", "2x2", "2x4", "4x2"]


def kernel(name, a_k, b_k):
    o = []
    w = o.append
    w(f"    // {name}: see the header of Gemm.cs. Grid x = output tiles, z = batch * splits; {'A K-major' if a_k else 'A M-major (ldmatrix.trans)'}, "
      f"{'B K-major' if b_k else 'B N-major (ldmatrix.trans)'}.")
    w(f"    static void {name}Kernel<TH, TP, TT>(ArrayView<ushort> a, ArrayView<ushort> b, FloatView bias, Params p, FloatView cF, ArrayView<ushort> cH)")
    w("        where TH : struct, IHalf where TP : struct, IPlatform where TT : struct, ITile")
    w("    {")
    w("        var sm = SharedMemory.GetDynamic<ushort>();")
    w("        var scratch = SharedMemory.GetDynamic<uint>();")
    w("        int warpsN = default(TT).WarpsN, stages = default(TT).Stages;")
    w("        int bm = default(TT).WarpsM * WarpTile, bn = warpsN * WarpTile, threads = default(TT).WarpsM * warpsN * 32;")
    w("        int lane = Warp.LaneIdx, warp = Warp.WarpIdx;")
    w("        int wm = warp / warpsN, wn = warp - wm * warpsN;")
    w("        TileOf(Grid.IdxX, (p.M + bm - 1) / bm, (p.N + bn - 1) / bn, out int tm, out int tn);")
    w("        int m0 = tm * bm, n0 = tn * bn;")
    w("        int z = Grid.IdxZ, bIdx = z / p.Splits, split = z - bIdx * p.Splits;")
    w("        long aOff = bIdx * p.StrideA, bOff = bIdx * p.StrideB, cOff = bIdx * p.StrideC + split * p.SplitStrideC;")
    w("        int kt0 = split * p.TilesPerSplit, kt1 = Math.Min((p.K + BK - 1) / BK, kt0 + p.TilesPerSplit);")
    w("        int stageBytes = (bm + bn) * BK * 2;")
    w("        uint smBase = default(TP).SmemBase();")
    w("        int ws = stages * stageBytes / 4 + warp * ScratchPerWarp;")
    w("        int q = lane / 8, r8 = lane % 8;")
    # per-lane ldmatrix offsets inside a stage's A / B tile
    if a_k:
        w("        int ar = wm * WarpTile + lane % 16, aSw = (ar >> 1) & 3;")
        w("        uint aL0 = (uint)(ar * 64 + ((lane / 16) ^ aSw) * 16), aL1 = (uint)(ar * 64 + ((2 + lane / 16) ^ aSw) * 16);")
    else:
        w("        uint aRow = (uint)(((q / 2) * 8 + r8) * bm * 2 + wm * 128);")
        w("        " + "; ".join(f"uint aX{i} = (uint)(((2 * {i} + q % 2) ^ r8) * 16)" for i in range(MI)) + ";")
    if b_k:
        w("        int br = wn * WarpTile + (q / 2) * 8 + r8, bSw = (br >> 1) & 3;")
        w("        uint bL0 = (uint)(br * 64 + ((q % 2) ^ bSw) * 16), bL1 = (uint)(br * 64 + ((2 + q % 2) ^ bSw) * 16);")
    else:
        w("        uint bRow = (uint)(((q % 2) * 8 + r8) * bn * 2 + wn * 128);")
        w("        " + "; ".join(f"uint bX{j} = (uint)(((2 * {j} + q / 2) ^ r8) * 16)" for j in range(NJ // 2)) + ";")
    for i in range(MI):
        w("        " + "float " + ", ".join(f"c{i}_{j}_{e} = 0f" for j in range(NJ) for e in range(4)) + ";")
    ak = "true" if a_k else "false"
    bk = "true" if b_k else "false"
    w("        for (int s = 0; s < stages - 1; s++)")
    w("        {")
    w(f"            if (kt0 + s < kt1) LoadStage<TP>(a, b, sm, p, smBase, s * stageBytes, kt0 + s, m0, n0, aOff, bOff, {ak}, {bk}, bm, bn, threads);")
    w("            default(TP).CommitGroup();")
    w("        }")
    w("        for (int kt = kt0; kt < kt1; kt++)")
    w("        {")
    w("            default(TP).WaitGroups(stages - 2);")
    w("            Group.Barrier(); // tile kt has landed for every thread, and everyone is done reading tile kt-1's stage")
    w("            int next = kt + stages - 1;")
    w(f"            if (next < kt1) LoadStage<TP>(a, b, sm, p, smBase, ((next - kt0) % stages) * stageBytes, next, m0, n0, aOff, bOff, {ak}, {bk}, bm, bn, threads);")
    w("            default(TP).CommitGroup();")
    w("            uint aS = smBase + (uint)(((kt - kt0) % stages) * stageBytes), bS = aS + (uint)(bm * BK * 2);")
    for kk in range(2):
        for i in range(MI):
            if a_k:
                addr = f"aS + aL{kk} + {i * 16 * 64}"
                tr = "false"
            else:
                addr = f"aS + aRow + (uint)({kk * 16} * bm * 2) + aX{i}"
                tr = "true"
            w(f"            default(TP).Ldsm({addr}, {tr}, sm, scratch, ws, " + ", ".join(f"out uint a{kk}_{i}_{r}" for r in range(4)) + ");")
        for jp in range(NJ // 2):
            if b_k:
                addr = f"bS + bL{kk} + {jp * 16 * 64}"
                tr = "false"
            else:
                addr = f"bS + bRow + (uint)({kk * 16} * bn * 2) + bX{jp}"
                tr = "true"
            outs = [f"b{kk}_{2 * jp}_0", f"b{kk}_{2 * jp}_1", f"b{kk}_{2 * jp + 1}_0", f"b{kk}_{2 * jp + 1}_1"]
            w(f"            default(TP).Ldsm({addr}, {tr}, sm, scratch, ws, " + ", ".join(f"out uint {x}" for x in outs) + ");")
        for i in range(MI):
            js = range(NJ) if i % 2 == 0 else reversed(range(NJ))  # serpentine: reuse the last B fragment
            for j in js:
                cs = ", ".join(f"ref c{i}_{j}_{e}" for e in range(4))
                aa = ", ".join(f"a{kk}_{i}_{r}" for r in range(4))
                w(f"            default(TP).Mma<TH>({cs}, {aa}, b{kk}_{j}_0, b{kk}_{j}_1, scratch, ws);")
    w("        }")
    w("        default(TP).WaitGroups(0);")
    w("        int row = m0 + wm * WarpTile + lane / 4, col = n0 + wn * WarpTile + (lane % 4) * 2;")
    for i in range(MI):
        for j in range(NJ):
            for e in range(4):
                rr = f"row + {i * 16 + (8 if e >= 2 else 0)}"
                cc = f"col + {j * 8 + (e % 2)}"
                w(f"        Store<TP>(p, bias, cF, cH, cOff, {rr}, {cc}, c{i}_{j}_{e});")
    w("    }")
    return o


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = ["// <auto-generated> by tools/gen_gemm.py; edit that script, not this file. </auto-generated>",
           "using ILGPU;", "using ILGPU.Runtime;", "using ILGPU.Runtime.Cuda;", "", "namespace IlgpuTune.Kernels;", "",
           "public static partial class Gemm", "{"]
    for name, (a_k, b_k) in LAYOUTS.items():
        out += kernel(name, a_k, b_k)
        out.append("")
    sig = "KernelConfig, ArrayView<ushort>, ArrayView<ushort>, FloatView, Params, FloatView, ArrayView<ushort>"
    out.append(f"    static Action<{sig}> Load(Accelerator acc, GemmLayout layout, HalfType type, TileConfig tile, bool emulated) => (layout, type, tile, emulated) switch")
    out.append("    {")
    for (name, t, tile, emu) in itertools.product(LAYOUTS, TYPES, TILES, [False, True]):
        ht = "BFloat16" if t == "Bf16" else "Float16"
        plat = "Emulated" if emu else "Ptx"
        out.append(f"        (GemmLayout.{name}, HalfType.{ht}, TileConfig.T{tile}, {'true' if emu else 'false'}) => acc.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, FloatView, Params, FloatView, ArrayView<ushort>>({name}Kernel<{t}, {plat}, Tile{tile}>),")
    out.append("        _ => throw new ArgumentOutOfRangeException(nameof(tile)),")
    out.append("    };")
    out.append("}")
    path = os.path.join(root, "kernels", "IlgpuTune.Kernels", "Gemm.g.cs")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {path}: {len(out)} lines")


if __name__ == "__main__":
    main()
