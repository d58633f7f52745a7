// Element-wise ops over flat views of n elements (n is long: whole weight tensors can pass 2^31 elements).
//   Add:        y = a + b             backward: dA = dB = dY (no kernel needed)
//   Mul:        y = a * b             backward: dA = Mul(dY, b), dB = Mul(dY, a)
//   Scale:      y = alpha * x         backward: dX = Scale(dY, alpha)
//   Accumulate: y += x                (gradient accumulation, residual grads)
//   Fill:       y = value             (zeroing grads, constants)
//   AddBias:    y[r,c] = x[r,c] + bias[c]    x, y [rows, cols]; bias [cols]
//               backward: dX = dY, dBias += SumRows(dY)
//   SumRows:    dBias[c] += sum_r dY[r,c]    one thread per column, rows in order: deterministic, no atomics
// Add, Scale and Accumulate take a Float4 kernel when every view is 16-byte aligned.
// y may alias an input exactly (each thread reads its element before writing it).
// Flat kernels are grid-stride loops launched through Launch.Flat.
using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Util;

namespace IlgpuTune.Kernels;

public static class Elementwise
{
    // ---- device kernels ----

    static void AddKernel(FloatView a, FloatView b, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = a[i] + b[i];
    }

    static void MulKernel(FloatView a, FloatView b, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = a[i] * b[i];
    }

    static void ScaleKernel(FloatView x, float alpha, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = alpha * x[i];
    }

    static void AccumulateKernel(FloatView x, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] += x[i];
    }

    // Add, Scale and Accumulate on 16-byte-aligned views: Float4 accesses, the n % 4 tail to the first threads.
    // op 0: y = a + b (accumulate passes b = y), op 1: y = alpha * a.
    static void BinaryVecKernel(FloatView a, FloatView b, float alpha, long n, FloatView y, int op)
    {
        var a4 = a.Cast<Float4>();
        var b4 = b.Cast<Float4>();
        var y4 = y.Cast<Float4>();
        long quads = n / 4;
        for (long i = Grid.GlobalIndex.X; i < quads; i += Launch.GridStride())
        {
            Float4 u = a4[i];
            if (op == 1) y4[i] = new Float4(alpha * u.X, alpha * u.Y, alpha * u.Z, alpha * u.W);
            else
            {
                Float4 v = b4[i];
                y4[i] = new Float4(u.X + v.X, u.Y + v.Y, u.Z + v.Z, u.W + v.W);
            }
        }
        long tail = quads * 4 + Grid.GlobalIndex.X;
        if (tail < n) y[tail] = op == 1 ? alpha * a[tail] : a[tail] + b[tail];
    }

    static bool TryBinaryVec(KernelRegistry k, FloatView a, FloatView b, float alpha, long n, FloatView y, int op)
    {
        if (!Launch.Aligned16(a, b, y)) return false;
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, float, long, FloatView, int>>(
            new("elementwise.binary.v4", BinaryVecKernel));
        kernel(Launch.Flat(k, Math.Max(n / 4, n % 4)), a, b, alpha, n, y, op);
        return true;
    }

    static void FillKernel(float value, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = value;
    }

    static void AddBiasKernel(FloatView x, FloatView bias, int cols, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride()) y[i] = x[i] + bias[i % cols];
    }

    static void SumRowsKernel(Index1D c, FloatView dY, int rows, int cols, FloatView dBias)
    {
        float acc = 0f;
        for (int r = 0; r < rows; r++) acc += dY[(long)r * cols + c];
        dBias[c] += acc;
    }

    // ---- launchers ----

    // a[n], b[n] -> y[n]
    public static void Add(KernelRegistry k, FloatView a, FloatView b, long n, FloatView y)
    {
        Launch.Need(a, n, nameof(a)); Launch.Need(b, n, nameof(b)); Launch.Need(y, n, nameof(y));
        if (TryBinaryVec(k, a, b, 0f, n, y, 0)) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, long, FloatView>>(new("elementwise.add", AddKernel));
        kernel(Launch.Flat(k, n), a, b, n, y);
    }

    // a[n], b[n] -> y[n]
    public static void Mul(KernelRegistry k, FloatView a, FloatView b, long n, FloatView y)
    {
        Launch.Need(a, n, nameof(a)); Launch.Need(b, n, nameof(b)); Launch.Need(y, n, nameof(y));
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, long, FloatView>>(new("elementwise.mul", MulKernel));
        kernel(Launch.Flat(k, n), a, b, n, y);
    }

    // x[n] -> y[n]
    public static void Scale(KernelRegistry k, FloatView x, float alpha, long n, FloatView y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (TryBinaryVec(k, x, x, alpha, n, y, 1)) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, float, long, FloatView>>(new("elementwise.scale", ScaleKernel));
        kernel(Launch.Flat(k, n), x, alpha, n, y);
    }

    // x[n] -> y[n] (accumulates)
    public static void Accumulate(KernelRegistry k, FloatView x, long n, FloatView y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        if (TryBinaryVec(k, x, y, 0f, n, y, 0)) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, long, FloatView>>(new("elementwise.accumulate", AccumulateKernel));
        kernel(Launch.Flat(k, n), x, n, y);
    }

    // -> y[n]
    public static void Fill(KernelRegistry k, float value, long n, FloatView y)
    {
        Launch.Need(y, n, nameof(y));
        var kernel = k.Get<Action<KernelConfig, float, long, FloatView>>(new("elementwise.fill", FillKernel));
        kernel(Launch.Flat(k, n), value, n, y);
    }

    // x[rows, cols], bias[cols] -> y[rows, cols]
    public static void AddBias(KernelRegistry k, FloatView x, FloatView bias, int rows, int cols, FloatView y)
    {
        long n = (long)rows * cols;
        Launch.Need(x, n, nameof(x)); Launch.Need(bias, cols, nameof(bias)); Launch.Need(y, n, nameof(y));
        if (n == 0) return;
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, int, long, FloatView>>(new("elementwise.addbias", AddBiasKernel));
        kernel(Launch.Flat(k, n), x, bias, cols, n, y);
    }

    // dY[rows, cols] -> dBias[cols] (accumulates)
    public static void SumRows(KernelRegistry k, FloatView dY, int rows, int cols, FloatView dBias)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        Launch.Need(dY, (long)rows * cols, nameof(dY)); Launch.Need(dBias, cols, nameof(dBias));
        if (cols == 0) return;
        var kernel = k.Get<Action<Index1D, FloatView, int, int, FloatView>>(new("elementwise.sumrows", SumRowsKernel));
        kernel(cols, dY, rows, cols, dBias);
    }

    // ---- CPU reference (sizes from span lengths) ----

    public static void AddCpu<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y) where T : IFloatingPointIeee754<T> =>
        TensorPrimitives.Add(a, b, y);

    public static void MulCpu<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y) where T : IFloatingPointIeee754<T> =>
        TensorPrimitives.Multiply(a, b, y);

    public static void ScaleCpu<T>(ReadOnlySpan<T> x, T alpha, Span<T> y) where T : IFloatingPointIeee754<T> =>
        TensorPrimitives.Multiply(x, alpha, y);

    public static void AccumulateCpu<T>(ReadOnlySpan<T> x, Span<T> y) where T : IFloatingPointIeee754<T> =>
        TensorPrimitives.Add(y, x, y);

    public static void FillCpu<T>(T value, Span<T> y) where T : IFloatingPointIeee754<T> => y.Fill(value);

    // x[rows, cols], bias[cols] -> y[rows, cols]
    public static void AddBiasCpu<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> bias, int rows, int cols, Span<T> y)
        where T : IFloatingPointIeee754<T>
    {
        for (int r = 0; r < rows; r++)
            TensorPrimitives.Add(x.Slice(r * cols, cols), bias[..cols], y.Slice(r * cols, cols));
    }

    // dY[rows, cols] -> dBias[cols] (accumulates)
    public static void SumRowsCpu<T>(ReadOnlySpan<T> dY, int rows, int cols, Span<T> dBias) where T : IFloatingPointIeee754<T>
    {
        var acc = new T[cols]; // summed apart from dBias, as the kernel does, so both round alike
        for (int r = 0; r < rows; r++) TensorPrimitives.Add(acc, dY.Slice(r * cols, cols), acc);
        TensorPrimitives.Add(dBias[..cols], acc, dBias[..cols]);
    }
}
