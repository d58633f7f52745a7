// The assembly that carries the ahead-of-time PTX (its resources come from tools/IlgpuTune.PtxAot at build time).
using IlgpuTune.Driver;

namespace IlgpuTune.Kernels.Ptx;

public static class PrecompiledPtx
{
    private static readonly Lazy<PtxLibrary> LazyLibrary = new(() => PtxLibrary.FromAssembly(typeof(PrecompiledPtx).Assembly));

    /// <summary>Every declared kernel's PTX for sm_80 and sm_90, read once on first use.</summary>
    public static PtxLibrary Library => LazyLibrary.Value;
}
