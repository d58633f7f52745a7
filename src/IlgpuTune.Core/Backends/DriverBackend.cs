// The op backend over the CUDA driver runtime (IDriverRuntime): the precompiled PTX of kernels/IlgpuTune.Kernels launched by
// name without an ILGPU Context, so a Native AOT app runs on CUDA. Each op launches exactly what its ILGPU launcher launches on
// CUDA (same kernel, grid, group, shared memory, arguments), from the launchers' own plan functions where a choice is made
// (LaunchTarget: RmsNorm, MatMul, Gemm); the rest is a flat grid-stride launch (Launch.Flat) or a per-row group. Ops not yet
// ported throw NotSupportedException naming the op. Arguments follow ILGPU's ABI: a view is {pointer, length}.
// No HostOffload (IOpBackend's null): offload_checkpoints keeps the checkpointed layer inputs on the GPU here.
using IlgpuTune.Driver;
using IlgpuTune.Kernels;
using K = IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using ILGPU;

namespace IlgpuTune.Core;

internal sealed partial class DriverBackend(Device device, IDriverRuntime runtime) : IOpBackend, IDisposable
{
    private readonly LaunchTarget _t = LaunchTarget.Cuda(runtime.Major == 9 && runtime.Minor == 0, runtime.Multiprocessors);

    // 16-bit flash attention takes the mma.sync kernels on every GPU: Hopper's wgmma attention kernels are not launched
    // through the driver yet, and the mma.sync ones are in the sm_90 PTX too (ILGPU's path runs them on Hopper for packed rows).
    private LaunchTarget MmaAttention => _t with { Wgmma = false };
    private ulong _workspace;
    private long _workspaceBytes;

    // ---- launching ----

    private KernelArguments Args(string kernel) => new(kernel, runtime.Entry(kernel).Parameters);

    private void Run(string kernel, KernelConfig c, KernelArguments a) =>
        runtime.Launch(kernel, new((uint)c.GridDim.X, (uint)c.GridDim.Y, (uint)c.GridDim.Z),
            new((uint)c.GroupDim.X, (uint)c.GroupDim.Y, (uint)c.GroupDim.Z), c.SharedMemoryConfig.ArraySize, a);

    // An implicitly grouped kernel (ILGPU's LoadAutoGroupedKernel): occupancy group size, ceil(extent / group) groups, the
    // extent as the first argument (the caller added it with Implicit).
    private void RunImplicit(string kernel, int extent, KernelArguments a)
    {
        uint group = (uint)runtime.GroupSize(kernel);
        runtime.Launch(kernel, new(((uint)extent + group - 1) / group), new(group), 0, a);
    }

    private KernelArguments Implicit(string kernel, int extent) => Args(kernel).Add(extent);

    private static DeviceView V(Tensor t) => new(t.DevicePointer, t.Length);

    private static DeviceView V(Tensor t, long offset, long count) => new(t.DevicePointer + (ulong)(offset * t.DType.Size()), count);

    // view.Cast<Float4>(): the same address, a quarter of the floats.
    private static DeviceView V4(DeviceView v) => v with { Length = v.Length / 4 };

    private static bool Aligned(DeviceView v, int bytes) => Launch.AlignedTo(v.Pointer, v.Length, bytes);

    private static bool Aligned16(params ReadOnlySpan<DeviceView> views)
    {
        foreach (var v in views)
            if (!Aligned(v, 16)) return false;
        return true;
    }

    /// <summary>The scratch buffer of KernelRegistry.Workspace: at least <paramref name="floats"/>, grown, never shrunk.</summary>
    private DeviceView Workspace(long floats)
    {
        long bytes = Math.Max(floats, 1) * sizeof(float);
        if (bytes > _workspaceBytes)
        {
            if (_workspace != 0) runtime.Allocator.Return(_workspace);
            _workspace = runtime.Allocator.Rent(bytes);
            device.Allocator.TrackExternal(bytes - _workspaceBytes);
            _workspaceBytes = bytes;
        }
        return new(_workspace, floats);
    }

    private static NotSupportedException NotYet(string op) =>
        new($"{op} is not supported on the driver runtime yet (precompiled PTX without ILGPU); run it on the managed CPU path or the JIT CLI");

    public void Dispose()
    {
        if (_workspace == 0) return;
        runtime.Allocator.Return(_workspace);
        device.Allocator.TrackExternal(-_workspaceBytes);
        _workspace = 0;
        _workspaceBytes = 0;
    }

    // ---- elementwise (Elementwise.cs) ----

    // Elementwise.TryBinaryVec: op 0 y = a + b, op 1 y = alpha * a, on 16-byte-aligned views.
    private bool TryBinaryVec(DeviceView a, DeviceView b, float alpha, long n, DeviceView y, int op)
    {
        if (!Aligned16(a, b, y)) return false;
        Run("elementwise.binary.v4", Launch.Flat(_t, Math.Max(n / 4, n % 4)), Args("elementwise.binary.v4").Add(a).Add(b).Add(alpha).Add(n).Add(y).Add(op));
        return true;
    }

    public void Fill(Tensor y, float value)
    {
        long n = (int)y.Length;
        Run("elementwise.fill", Launch.Flat(_t, n), Args("elementwise.fill").Add(value).Add(n).Add(V(y)));
    }

    public void Accumulate(Tensor x, Tensor y)
    {
        long n = (int)x.Length;
        if (TryBinaryVec(V(x), V(y), 0f, n, V(y), 0)) return;
        Run("elementwise.accumulate", Launch.Flat(_t, n), Args("elementwise.accumulate").Add(V(x)).Add(n).Add(V(y)));
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        long n = a.Length;
        if (TryBinaryVec(V(a), V(b), 0f, n, V(y), 0)) return;
        Run("elementwise.add", Launch.Flat(_t, n), Args("elementwise.add").Add(V(a)).Add(V(b)).Add(n).Add(V(y)));
    }

    public void Mul(Tensor a, Tensor b, Tensor y)
    {
        long n = (int)a.Length;
        Run("elementwise.mul", Launch.Flat(_t, n), Args("elementwise.mul").Add(V(a)).Add(V(b)).Add(n).Add(V(y)));
    }

    public void Scale(Tensor x, float alpha, Tensor y)
    {
        long n = (int)x.Length;
        if (TryBinaryVec(V(x), V(x), alpha, n, V(y), 1)) return;
        Run("elementwise.scale", Launch.Flat(_t, n), Args("elementwise.scale").Add(V(x)).Add(alpha).Add(n).Add(V(y)));
    }

    public void SumRows(Tensor dY, Tensor dBias)
    {
        int cols = dBias.Dim(0), rows = (int)(dY.Length / cols);
        if (cols == 0) return;
        RunImplicit("elementwise.sumrows", cols, Implicit("elementwise.sumrows", cols).Add(V(dY)).Add(rows).Add(cols).Add(V(dBias)));
    }

    private void AddBias(DeviceView x, DeviceView bias, int rows, int cols, DeviceView y)
    {
        long n = (long)rows * cols;
        if (n == 0) return;
        Run("elementwise.addbias", Launch.Flat(_t, n), Args("elementwise.addbias").Add(x).Add(bias).Add(cols).Add(n).Add(y));
    }

    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count)
    {
        long size = src.DType.Size();
        if (count == 0) return;
        runtime.Copy(src.DevicePointer + (ulong)(srcOffset * size), dst.DevicePointer + (ulong)(dstOffset * size), count * size);
    }

    // ---- activation (Activation.cs) ----

    private void Flat(string kernel, long n, KernelArguments a)
    {
        if (n == 0) return;
        Run(kernel, Launch.Flat(_t, n), a);
    }

    public void SiluForward(Tensor x, Tensor y) =>
        Flat("activation.silu.forward", x.Length, Args("activation.silu.forward").Add(V(x)).Add(x.Length).Add(V(y)));

    public void SiluBackward(Tensor dY, Tensor x, Tensor dX) =>
        Flat("activation.silu.backward", x.Length, Args("activation.silu.backward").Add(V(dY)).Add(V(x)).Add(x.Length).Add(V(dX)));

    public void SwiGluForward(Tensor gate, Tensor up, Tensor y)
    {
        long n = gate.Length;
        if (Aligned16(V(gate), V(up), V(y)))
            Run("activation.swiglu.forward.v4", Launch.Flat(_t, Math.Max(n / 4, n % 4)),
                Args("activation.swiglu.forward.v4").Add(V(gate)).Add(V(up)).Add(n).Add(V(y)));
        else Run("activation.swiglu.forward", Launch.Flat(_t, n), Args("activation.swiglu.forward").Add(V(gate)).Add(V(up)).Add(n).Add(V(y)));
    }

    public void SwiGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp)
    {
        long n = gate.Length;
        bool vec = Aligned16(V(dY), V(gate), V(up), V(dGate), V(dUp));
        string kernel = vec ? "activation.swiglu.backward.v4" : "activation.swiglu.backward";
        Run(kernel, Launch.Flat(_t, vec ? Math.Max(n / 4, n % 4) : n), Args(kernel).Add(V(dY)).Add(V(gate)).Add(V(up)).Add(n).Add(V(dGate)).Add(V(dUp)));
    }

    public void GeGluForward(Tensor gate, Tensor up, Tensor y) =>
        Run("activation.geglu.forward", Launch.Flat(_t, gate.Length), Args("activation.geglu.forward").Add(V(gate)).Add(V(up)).Add(gate.Length).Add(V(y)));

    public void GeGluBackward(Tensor dY, Tensor gate, Tensor up, Tensor dGate, Tensor dUp) =>
        Run("activation.geglu.backward", Launch.Flat(_t, gate.Length),
            Args("activation.geglu.backward").Add(V(dY)).Add(V(gate)).Add(V(up)).Add(gate.Length).Add(V(dGate)).Add(V(dUp)));

    // ---- cast (Cast.cs): the vector kernels when the fp32 side is 16-byte and the 16-bit side 8-byte aligned ----

    public void Cast(Tensor x, Tensor y)
    {
        long n = (int)x.Length;
        var (f, h, toHalf, f16) = (x.DType, y.DType) switch
        {
            (DType.F32, DType.BF16) => (V(x), V(y), true, 0),
            (DType.F32, DType.F16) => (V(x), V(y), true, 1),
            (DType.BF16, DType.F32) => (V(y), V(x), false, 0),
            (DType.F16, DType.F32) => (V(y), V(x), false, 1),
            _ => throw new NotSupportedException($"cast: {x.DType} -> {y.DType} (go through F32)"),
        };
        if (Aligned(f, 16) && Aligned(h, 8))
        {
            string vec = toHalf ? "cast.tohalf.v4" : "cast.fromhalf.v4";
            Run(vec, Launch.Flat(_t, Math.Max(n / 4, n % 4)), Args(vec).Add(V(x)).Add(n).Add(V(y)).Add(f16));
            return;
        }
        string kernel = (toHalf, f16) switch
        {
            (true, 0) => "cast.tobf16", (true, _) => "cast.tof16", (false, 0) => "cast.frombf16", _ => "cast.fromf16",
        };
        Run(kernel, Launch.Flat(_t, n), Args(kernel).Add(V(x)).Add(n).Add(V(y)));
    }

    // ---- column gather, dropout, embedding ----

    public void ColumnGatherForward(Tensor x, Tensor index, Tensor y)
    {
        int inCols = x.Dim(-1), outCols = index.Dim(0);
        long n = x.Length / inCols * outCols;
        Flat("columngather.forward", n, Args("columngather.forward").Add(V(x)).Add(V(index)).Add(inCols).Add(outCols).Add(n).Add(V(y)));
    }

    public void ColumnGatherBackward(Tensor dY, Tensor index, Tensor dX)
    {
        int inCols = dX.Dim(-1), outCols = index.Dim(0);
        long n = dX.Length / inCols * outCols;
        Flat("columngather.backward", n, Args("columngather.backward").Add(V(dY)).Add(V(index)).Add(inCols).Add(outCols).Add(n).Add(V(dX)));
    }

    public void Dropout(Tensor x, float p, ulong seed, Tensor y)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1)");
        Flat("dropout.apply", x.Length, Args("dropout.apply").Add(V(x)).Add(x.Length).Add(seed).Add(K.Dropout.Threshold(p)).Add(K.Dropout.Scale(p)).Add(V(y)));
    }

    public void EmbeddingForward(Tensor ids, Tensor table, Tensor y)
    {
        int hidden = table.Dim(1), tokens = (int)ids.Length;
        long n = (long)tokens * hidden;
        int vocab = (int)Math.Min(table.Length / hidden, int.MaxValue);
        if (table.DType == DType.F32)
            Run("embedding.forward", Launch.Flat(_t, n), Args("embedding.forward").Add(V(ids)).Add(V(table)).Add(hidden).Add(vocab).Add(n).Add(V(y)));
        else
            Run("embedding.forward_half", Launch.Flat(_t, n), Args("embedding.forward_half").Add(V(ids)).Add(V(table)).Add(hidden).Add(vocab).Add(n)
                .Add(table.DType == DType.F16 ? 1 : 0).Add(V(y)));
    }

    public void EmbeddingBackward(Tensor dY, Tensor ids, Tensor dTable)
    {
        int hidden = dTable.Dim(1);
        if (hidden == 0) return;
        RunImplicit("embedding.backward", hidden, Implicit("embedding.backward", hidden).Add(V(dY)).Add(V(ids)).Add((int)ids.Length).Add(hidden)
            .Add(dTable.Dim(0)).Add(V(dTable)));
    }

    // ---- RMSNorm (RmsNorm.cs plans) ----

    public void RmsNormForward(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        int dim = weight.Dim(0), rows = (int)(x.Length / dim);
        if (rows == 0) return;
        var (kernel, config, cached) = K.RmsNorm.ForwardPlan(_t, rows, dim, Aligned16(V(x), V(weight), V(y)));
        var a = Args(kernel);
        if (kernel == "rmsnorm.forward.v4") a.Add(V4(V(x))).Add(V4(V(weight))).Add(dim).Add(eps).Add(V4(V(y))).Add(V(rstd));
        else a.Add(V(x)).Add(V(weight)).Add(dim).Add(eps).Add(cached).Add(V(y)).Add(V(rstd));
        Run(kernel, config, a);
    }

    public void RmsNormBackward(Tensor dY, Tensor x, Tensor weight, Tensor rstd, Tensor dX, Tensor dW)
    {
        int dim = weight.Dim(0), rows = (int)(x.Length / dim);
        if (rows == 0) return;
        var plan = K.RmsNorm.BackwardPlan(_t, rows, dim, Aligned16(V(dY), V(x), V(weight), V(dX)));
        var partials = Workspace((long)plan.Blocks * dim);
        if (plan.Vector)
            Run("rmsnorm.backward.v4", plan.Main, Args("rmsnorm.backward.v4").Add(V4(V(dY))).Add(V4(V(x))).Add(V4(V(weight))).Add(V(rstd))
                .Add(rows).Add(dim).Add(V4(V(dX))).Add(V4(partials)));
        else
        {
            Run("rmsnorm.backward.input", plan.Main, Args("rmsnorm.backward.input").Add(V(dY)).Add(V(x)).Add(V(weight)).Add(V(rstd)).Add(dim)
                .Add(plan.Cached).Add(V(dX)));
            RunImplicit("rmsnorm.backward.weight.partial", plan.PartialExtent, Implicit("rmsnorm.backward.weight.partial", plan.PartialExtent)
                .Add(V(dY)).Add(V(x)).Add(V(rstd)).Add(rows).Add(dim).Add(partials));
        }
        Run("rmsnorm.backward.weight.reduce", plan.Reduce, Args("rmsnorm.backward.weight.reduce").Add(partials).Add(plan.Blocks).Add(dim).Add(V(dW)));
    }

    // ---- rotary embedding (Rope.cs) ----

    public void RopeForward(Tensor x, Tensor cos, Tensor sin, int heads, int headDim, Tensor y) => Rotate(x, cos, sin, heads, headDim, 1f, y);

    public void RopeBackward(Tensor dY, Tensor cos, Tensor sin, int heads, int headDim, Tensor dX) => Rotate(dY, cos, sin, heads, headDim, -1f, dX);

    private void Rotate(Tensor x, Tensor cos, Tensor sin, int heads, int headDim, float sign, Tensor y)
    {
        if (headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be even");
        int tokens = ManagedCpuBackend.Tokens(x, heads, headDim);
        int pairs = checked(tokens * heads * (headDim / 2)), half = headDim / 2;
        if (pairs == 0) return;
        if (half % 4 == 0 && Aligned16(V(x), V(cos), V(sin), V(y)))
            RunImplicit("rope.rotate.v4", pairs / 4, Implicit("rope.rotate.v4", pairs / 4).Add(V4(V(x))).Add(V4(V(cos))).Add(V4(V(sin))).Add(heads)
                .Add(half / 4).Add(sign).Add(V4(V(y))));
        else
            RunImplicit("rope.rotate", pairs, Implicit("rope.rotate", pairs).Add(V(x)).Add(V(cos)).Add(V(sin)).Add(heads).Add(half).Add(sign).Add(V(y)));
    }

    // ---- cross-entropy (CrossEntropy.cs): one row group per row ----

    public void CrossEntropyForward(Tensor logits, Tensor targets, Tensor lossPerRow, Tensor logSumExp)
    {
        int vocab = logits.Dim(-1);
        CrossEntropyForward(V(logits), V(targets), (int)(logits.Length / vocab), vocab, V(lossPerRow), V(logSumExp));
    }

    private void CrossEntropyForward(DeviceView logits, DeviceView targets, int rows, int vocab, DeviceView loss, DeviceView lse)
    {
        if (rows == 0) return;
        Run("crossentropy.forward", new KernelConfig(rows, _t.RowGroupSize), Args("crossentropy.forward").Add(logits).Add(targets).Add(vocab).Add(loss).Add(lse));
    }

    public void CrossEntropyBackward(Tensor logits, Tensor targets, Tensor logSumExp, float gradScale, Tensor dLogits)
    {
        int vocab = logits.Dim(-1);
        CrossEntropyBackward(V(logits), V(targets), V(logSumExp), (int)(logits.Length / vocab), vocab, gradScale, V(dLogits));
    }

    private void CrossEntropyBackward(DeviceView logits, DeviceView targets, DeviceView lse, int rows, int vocab, float gradScale, DeviceView dLogits)
    {
        if (rows == 0) return;
        Run("crossentropy.backward", new KernelConfig(rows, _t.RowGroupSize),
            Args("crossentropy.backward").Add(logits).Add(targets).Add(lse).Add(vocab).Add(gradScale).Add(dLogits));
    }

    // ---- fp32 matrix products (MatMul.cs plan) ----

    private void MatMulF32(GemmLayout layout, int m, int n, int kDim, DeviceView a, DeviceView b, float alpha, bool accumulate, DeviceView c)
    {
        if (m == 0 || n == 0) return;
        Run("matmul.tiled", K.MatMul.Plan(m, n), Args("matmul.tiled").Add(a).Add(b).Add(m).Add(n).Add(kDim).Add(K.MatMul.Strides(layout, m, n, kDim))
            .Add(alpha).Add(accumulate ? 1 : 0).Add(c));
    }

    public void MatMul(GemmLayout layout, MatMulShape s, Tensor a, Tensor b, Tensor? bias, float alpha, bool accumulate, Tensor c)
    {
        if (a.DType == DType.F32)
        {
            if (b.DType != DType.F32 || c.DType != DType.F32)
                throw new NotSupportedException($"matmul: F32 x {b.DType} -> {c.DType}; fp32 products take and give F32");
            MatMulF32(layout, s.M, s.N, s.K, V(a), V(b), alpha, accumulate, V(c));
            if (bias is not null) AddBias(V(c), V(bias), s.M, s.N, V(c));
            return;
        }
        if (b.DType != a.DType) throw new NotSupportedException($"matmul: {a.DType} x {b.DType}; tensor cores take one 16-bit type");
        var half = Precision.HalfOf(a.DType);
        var biasView = bias is null ? default : V(bias);
        if (c.DType == DType.F32) Gemm(layout, half, V(a), V(b), biasView, s.M, s.N, s.K, alpha, accumulate, 0, V(c));
        else Gemm(layout, half, V(a), V(b), biasView, s.M, s.N, s.K, alpha, accumulate, c.DType == DType.BF16 ? 1 : 2, V(c));
    }

    // ---- attention ----

    public void AttentionWithCache(Tensor q, Tensor keys, Tensor values, int start, int numHeads, int numKvHeads, int headDim, Tensor o,
        int slidingWindow = 0, float? scale = null)
    {
        int n = ManagedCpuBackend.Tokens(q, numHeads, headDim);
        if (n == 0) return;
        if (numHeads % numKvHeads != 0 || slidingWindow < 0 || start < 0)
            throw new ArgumentException($"invalid cached attention sizes: {numHeads} heads over {numKvHeads} kv heads, window {slidingWindow}");
        int keysCount = checked(start + n), scoreRows = checked(n * numHeads);
        using var probs = Tensor.Empty(device, DType.F32, n, numHeads, keysCount);
        Run("attention.cached.probs", new KernelConfig(scoreRows, _t.RowGroupSize), Args("attention.cached.probs").Add(V(q)).Add(V(keys)).Add(start)
            .Add(keysCount).Add(numHeads).Add(numKvHeads).Add(headDim).Add(scale ?? (float)(1.0 / Math.Sqrt(headDim))).Add(slidingWindow).Add(V(probs)));
        int elements = checked(scoreRows * headDim);
        RunImplicit("attention.cached.output", elements, Implicit("attention.cached.output", elements).Add(V(probs)).Add(V(values)).Add(start)
            .Add(keysCount).Add(numHeads).Add(numKvHeads).Add(headDim).Add(slidingWindow).Add(V(o)));
    }
}
