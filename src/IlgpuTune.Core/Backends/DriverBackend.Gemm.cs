// 16-bit tensor-core products on the driver runtime: Gemm.Plan (the ILGPU launcher's own plan) gives the tile kernel, its
// Params and shapes, and the split-K reduce; the operands are raw device addresses here.
using IlgpuTune.Driver;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class DriverBackend
{
    // a, b: 16-bit operands as in Gemm.Batched (batch 1); bias[n] or default; outMode 0: c fp32, 1 bf16, 2 f16.
    private void Gemm(GemmLayout layout, HalfType type, DeviceView a, DeviceView b, DeviceView bias, int m, int n, int kDim, float alpha,
        bool accumulate, int outMode, DeviceView c)
    {
        if (m == 0 || n == 0) return;
        var plan = Kernels.Gemm.Plan(_t, layout, type, a.Pointer, b.Pointer, c.Pointer, bias.Length > 0, 1, m, n, kDim, 0, 0, 0, alpha, accumulate,
            outMode, null, -1);
        string kernel = Kernels.Gemm.KernelName(layout, type, plan.Tile);
        var (cF, cH) = outMode == 0 ? (c, default(DeviceView)) : (default, c);
        if (plan.Splits == 1)
        {
            Run(kernel, plan.Config, Args(kernel).Add(a).Add(b).Add(bias).Add(plan.Epilogue).Add(cF).Add(cH));
            return;
        }
        var ws = Workspace(plan.WorkspaceFloats);
        Run(kernel, plan.Config, Args(kernel).Add(a).Add(b).Add(default(DeviceView)).Add(plan.Partial(ws.Pointer)).Add(ws).Add(default(DeviceView)));
        Run("gemm.splitreduce", plan.ReduceConfig, Args("gemm.splitreduce").Add(ws).Add(bias).Add(plan.Epilogue).Add(1).Add(plan.Splits).Add(cF).Add(cH));
    }
}
