// Optimizer-side ops: the AdamW step (torch.optim.AdamW, decoupled weight decay, amsgrad off), GradScaler's unscale with
// its non-finite check, and the per-tensor sums of squares behind clip_grad_norm_ (formats.md §6.1-6.3).
//   Step:     param, grad, expAvg, expAvgSq [n] fp32, step t >= 1; with bc1 = 1 - b1^t, bc2 = 1 - b2^t in double:
//               p  *= 1 - lr*wd                         (decoupled decay first, with the current lr)
//               m   = m + (1 - b1)*(g - m)              (exp_avg.lerp_(g, 1 - b1); torch fuses it into an fma, ptxas may too)
//               v   = v*b2 + (1 - b2)*g*g
//               p  += (-lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
//             Scalars are formed in double and rounded to fp32 once, as torch does with its Python floats.
//   Unscale:  grad[n] *= invScale; foundInf[0] = 1 if any grad was non-finite BEFORE scaling (never cleared here).
//             Threads that see one all store the same 1, so no atomics are needed.
//   SumOfSquares: partials[tensor * P + group] = this group's part of sum(x^2), fp32 (P = PartialsPerTensor groups).
//             The host adds the P partials of a tensor in double, takes the sqrt (torch's per-tensor norm), and combines
//             the norms as torch's norm of norms. Deterministic: fixed partition, no atomics.
// None of these has a backward: they run outside autograd.
//
// Multi-tensor launches: ILGPU views cannot be kept in arrays, but a struct of views can be a kernel parameter, so a
// launch carries up to PackSize tensors by value (as torch's multi_tensor_apply packs pointers into kernel arguments).
// Every thread walks the slots in order and does its grid-stride share of each, so there is no per-element tensor
// lookup; unused slots are empty views. A list of T tensors costs ceil(T / PackSize) launches.
using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuTune.Kernels;

/// <summary>Hyperparameters of one AdamW step on tensors that have taken <see cref="Step"/> steps (1 on the first).</summary>
public readonly record struct AdamWStep(double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, long Step)
{
    public double Decay => 1 - Lr * WeightDecay;
    public double BiasCorrection1 => 1 - Math.Pow(Beta1, Step);
    public double BiasCorrection2Sqrt => Math.Sqrt(1 - Math.Pow(Beta2, Step));
    public double StepSize => Lr / BiasCorrection1;
}

/// <summary>The four fp32 views one AdamW update touches; all hold at least Param.Length elements.</summary>
public readonly record struct AdamWTensor(FloatView Param, FloatView Grad, FloatView ExpAvg, FloatView ExpAvgSq);

public static class AdamW
{
    /// <summary>Tensors carried by one multi-tensor launch.</summary>
    public const int PackSize = 8;

    // ---- kernel parameter structs (fp32 scalars, views by value) ----

    internal readonly struct Coefficients(AdamWStep s)
    {
        public readonly float Decay = (float)s.Decay, OneMinusBeta1 = (float)(1 - s.Beta1), Beta2 = (float)s.Beta2,
            OneMinusBeta2 = (float)(1 - s.Beta2), Bc2Sqrt = (float)s.BiasCorrection2Sqrt, Eps = (float)s.Eps,
            NegStepSize = (float)-s.StepSize;
    }

    internal struct Slot
    {
        public FloatView P, G, M, V;
        public long N;
    }

    internal struct StepPack
    {
        public Slot S0, S1, S2, S3, S4, S5, S6, S7;
    }

    internal struct ViewPack
    {
        public FloatView X0, X1, X2, X3, X4, X5, X6, X7;
    }

    // ---- device kernels ----

    static void UpdateRange(FloatView p, FloatView g, FloatView m, FloatView v, long n, Coefficients c)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float gi = g[i];
            float pi = p[i] * c.Decay;
            float mi = m[i];
            mi += c.OneMinusBeta1 * (gi - mi);
            float vi = v[i] * c.Beta2 + c.OneMinusBeta2 * gi * gi;
            float denom = MathF.Sqrt(vi) / c.Bc2Sqrt + c.Eps;
            m[i] = mi;
            v[i] = vi;
            p[i] = pi + c.NegStepSize * mi / denom;
        }
    }

    static void Update(Slot s, Coefficients c) => UpdateRange(s.P, s.G, s.M, s.V, s.N, c);

    static void StepKernel(FloatView grad, long n, Coefficients c, FloatView param, FloatView expAvg, FloatView expAvgSq) =>
        UpdateRange(param, grad, expAvg, expAvgSq, n, c);

    static void StepPackKernel(StepPack pack, Coefficients c)
    {
        Update(pack.S0, c); Update(pack.S1, c); Update(pack.S2, c); Update(pack.S3, c);
        Update(pack.S4, c); Update(pack.S5, c); Update(pack.S6, c); Update(pack.S7, c);
    }

    static void UnscaleRange(FloatView g, float invScale, FloatView foundInf)
    {
        for (long i = Grid.GlobalIndex.X; i < g.Length; i += Launch.GridStride())
        {
            float x = g[i];
            if ((Interop.FloatAsInt(x) & 0x7F800000) == 0x7F800000) foundInf[0] = 1f; // inf or NaN
            g[i] = x * invScale;
        }
    }

    static void UnscalePackKernel(ViewPack grads, float invScale, FloatView foundInf)
    {
        UnscaleRange(grads.X0, invScale, foundInf); UnscaleRange(grads.X1, invScale, foundInf);
        UnscaleRange(grads.X2, invScale, foundInf); UnscaleRange(grads.X3, invScale, foundInf);
        UnscaleRange(grads.X4, invScale, foundInf); UnscaleRange(grads.X5, invScale, foundInf);
        UnscaleRange(grads.X6, invScale, foundInf); UnscaleRange(grads.X7, invScale, foundInf);
    }

    static void SumSquaresRange(FloatView x, long slot, FloatView partials, ArrayView<float> scratch)
    {
        float acc = 0f;
        for (long i = Grid.GlobalIndex.X; i < x.Length; i += Launch.GridStride()) acc += x[i] * x[i];
        float total = Reduce.GroupSum(acc, scratch);
        long at = slot * Grid.DimX + Grid.IdxX;
        if (Group.IdxX == 0 && at < partials.Length) partials[at] = total; // the last pack has fewer slots than PackSize
    }

    static void SumSquaresPackKernel(ViewPack xs, FloatView partials)
    {
        var scratch = SharedMemory.Allocate<float>(Reduce.ScratchSize);
        SumSquaresRange(xs.X0, 0, partials, scratch); SumSquaresRange(xs.X1, 1, partials, scratch);
        SumSquaresRange(xs.X2, 2, partials, scratch); SumSquaresRange(xs.X3, 3, partials, scratch);
        SumSquaresRange(xs.X4, 4, partials, scratch); SumSquaresRange(xs.X5, 5, partials, scratch);
        SumSquaresRange(xs.X6, 6, partials, scratch); SumSquaresRange(xs.X7, 7, partials, scratch);
    }

    // ---- launchers ----

    // grad[n] -> param, expAvg, expAvgSq [n] updated in place
    public static void Step(KernelRegistry k, FloatView grad, long n, AdamWStep step, FloatView param, FloatView expAvg, FloatView expAvgSq)
    {
        Launch.Need(grad, n, nameof(grad)); Launch.Need(param, n, nameof(param));
        Launch.Need(expAvg, n, nameof(expAvg)); Launch.Need(expAvgSq, n, nameof(expAvgSq));
        CheckStep(step);
        if (n == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, long, Coefficients, FloatView, FloatView, FloatView>>(
            new("adamw.step", StepKernel));
        kernel(Launch.Flat(k, n), grad, n, new Coefficients(step), param, expAvg, expAvgSq);
    }

    // tensors[i]: grad[n_i] -> param, expAvg, expAvgSq [n_i] updated in place, n_i = Param.Length; one launch per PackSize
    public static void StepMulti(KernelRegistry k, IReadOnlyList<AdamWTensor> tensors, AdamWStep step, AcceleratorStream? stream = null)
    {
        CheckStep(step);
        var kernel = k.Get<Action<AcceleratorStream, KernelConfig, StepPack, Coefficients>>(new("adamw.step.multi", StepPackKernel));
        stream ??= k.Stream;
        var c = new Coefficients(step);
        for (int start = 0; start < tensors.Count; start += PackSize)
        {
            var slots = new Slot[PackSize];
            long total = 0;
            for (int s = 0; s < PackSize; s++)
            {
                var t = start + s < tensors.Count ? tensors[start + s] : Empty(tensors[start].Param);
                long n = t.Param.Length;
                if (start + s < tensors.Count)
                {
                    Launch.Need(t.Grad, n, $"tensors[{start + s}].Grad"); Launch.Need(t.ExpAvg, n, $"tensors[{start + s}].ExpAvg");
                    Launch.Need(t.ExpAvgSq, n, $"tensors[{start + s}].ExpAvgSq");
                }
                slots[s] = new Slot { P = t.Param, G = t.Grad, M = t.ExpAvg, V = t.ExpAvgSq, N = n };
                total = Math.Max(total, n);
            }
            if (total == 0) continue;
            var pack = new StepPack
            {
                S0 = slots[0], S1 = slots[1], S2 = slots[2], S3 = slots[3], S4 = slots[4], S5 = slots[5], S6 = slots[6], S7 = slots[7],
            };
            kernel(stream, Launch.Flat(k, total), pack, c);
        }
    }

    // grads[i][len_i] *= invScale in place; foundInf[1] set to 1 if any element was non-finite (left alone otherwise)
    public static void Unscale(KernelRegistry k, IReadOnlyList<FloatView> grads, float invScale, FloatView foundInf)
    {
        Launch.Need(foundInf, 1, nameof(foundInf));
        var kernel = k.Get<Action<KernelConfig, ViewPack, float, FloatView>>(new("adamw.unscale.multi", UnscalePackKernel));
        for (int start = 0; start < grads.Count; start += PackSize)
        {
            var (pack, longest) = Pack(grads, start);
            if (longest > 0) kernel(Launch.Flat(k, longest), pack, invScale, foundInf);
        }
    }

    /// <summary>Partial sums written per tensor by <see cref="SumOfSquares"/> (the groups of its fixed grid).</summary>
    public static int PartialsPerTensor(KernelRegistry k) => PartialsPerTensor(k.Target);

    internal static int PartialsPerTensor(LaunchTarget t) => t.Emulated ? 2 : 512;

    // xs[i][len_i] -> partials[xs.Count * PartialsPerTensor(k)]: partials[i*P + g] = group g's share of sum(xs[i]^2)
    public static void SumOfSquares(KernelRegistry k, IReadOnlyList<FloatView> xs, FloatView partials)
    {
        int p = PartialsPerTensor(k);
        Launch.Need(partials, (long)xs.Count * p, nameof(partials));
        var kernel = k.Get<Action<KernelConfig, ViewPack, FloatView>>(new("adamw.sumsq.multi", SumSquaresPackKernel));
        for (int start = 0; start < xs.Count; start += PackSize)
        {
            var (pack, _) = Pack(xs, start);
            // Every group writes every slot's partial (zero for empty tensors), so the grid is fixed at P groups.
            long count = Math.Min(PackSize, xs.Count - start) * (long)p;
            kernel(new KernelConfig(p, k.RowGroupSize), pack, partials.SubView((long)start * p, count));
        }
    }

    private static (ViewPack Pack, long Longest) Pack(IReadOnlyList<FloatView> views, int start)
    {
        var v = new FloatView[PackSize];
        long longest = 0;
        for (int s = 0; s < PackSize; s++)
        {
            v[s] = start + s < views.Count ? views[start + s] : views[start].SubView(0, 0);
            longest = Math.Max(longest, v[s].Length);
        }
        return (new ViewPack { X0 = v[0], X1 = v[1], X2 = v[2], X3 = v[3], X4 = v[4], X5 = v[5], X6 = v[6], X7 = v[7] }, longest);
    }

    // Unused slots get empty views of a real buffer: a default view has no buffer for the launcher to marshal.
    private static AdamWTensor Empty(FloatView any)
    {
        var e = any.SubView(0, 0);
        return new AdamWTensor(e, e, e, e);
    }

    private static void CheckStep(AdamWStep step)
    {
        if (step.Step < 1) throw new ArgumentOutOfRangeException(nameof(step), step.Step, "AdamW step count starts at 1");
    }

    // ---- CPU reference: the spec ----

    // grad[n] -> param, expAvg, expAvgSq [n] updated in place (n = param.Length)
    public static void StepCpu<T>(ReadOnlySpan<T> grad, AdamWStep step, Span<T> param, Span<T> expAvg, Span<T> expAvgSq)
        where T : IFloatingPointIeee754<T>
    {
        CheckStep(step);
        int n = param.Length;
        grad = grad[..n]; expAvg = expAvg[..n]; expAvgSq = expAvgSq[..n];
        T decay = T.CreateTruncating(step.Decay), oneMinusBeta1 = T.CreateTruncating(1 - step.Beta1);
        T beta2 = T.CreateTruncating(step.Beta2), oneMinusBeta2 = T.CreateTruncating(1 - step.Beta2);
        T bc2Sqrt = T.CreateTruncating(step.BiasCorrection2Sqrt), eps = T.CreateTruncating(step.Eps);
        T negStepSize = T.CreateTruncating(-step.StepSize);
        var rented = ArrayPool<T>.Shared.Rent(2 * n);
        var tmp = rented.AsSpan(0, n);
        var denom = rented.AsSpan(n, n);
        try
        {
            TensorPrimitives.Multiply(param, decay, param);
            TensorPrimitives.Subtract(grad, expAvg, tmp);
            TensorPrimitives.MultiplyAdd(tmp, oneMinusBeta1, expAvg, expAvg);
            TensorPrimitives.Multiply(grad, oneMinusBeta2, tmp);
            TensorPrimitives.Multiply(tmp, grad, tmp);
            TensorPrimitives.Multiply(expAvgSq, beta2, expAvgSq);
            TensorPrimitives.Add(expAvgSq, tmp, expAvgSq);
            TensorPrimitives.Sqrt(expAvgSq, denom);
            TensorPrimitives.Divide(denom, bc2Sqrt, denom);
            TensorPrimitives.Add(denom, eps, denom);
            TensorPrimitives.Multiply(expAvg, negStepSize, tmp);
            TensorPrimitives.Divide(tmp, denom, tmp);
            TensorPrimitives.Add(param, tmp, param);
        }
        finally
        {
            ArrayPool<T>.Shared.Return(rented);
        }
    }

    /// <summary>grad *= invScale in place; true if any element was non-finite before scaling.</summary>
    public static bool UnscaleCpu<T>(Span<T> grad, T invScale) where T : IFloatingPointIeee754<T>
    {
        bool found = false;
        foreach (var x in grad) found |= !T.IsFinite(x);
        TensorPrimitives.Multiply(grad, invScale, grad);
        return found;
    }

    /// <summary>sum(x^2) accumulated in T.</summary>
    public static T SumOfSquaresCpu<T>(ReadOnlySpan<T> x) where T : IFloatingPointIeee754<T> => TensorPrimitives.SumOfSquares(x);
}
