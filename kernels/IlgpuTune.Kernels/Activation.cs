// SiLU and SwiGLU, as in HF LlamaMLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)) with act_fn = SiLU.
// Flat views of n elements; gate, up, y, dGate, dUp all [n] (n = tokens * intermediate_size).
//   SiLU:    s = sigmoid(x) = 1/(1+exp(-x)),  y = x*s
//            dX = dY * s*(1 + x*(1-s))                       (overwrites dX)
//   SwiGLU:  y = silu(gate) * up
//            dUp = dY * silu(gate),  dGate = dY * up * s*(1 + gate*(1-s))   (overwrite both)
// 1/(1+exp(-x)) needs no special casing in IEEE float: for x < -88 exp(-x) is +inf and s is 0, for large x exp(-x)
// underflows and s is 1, so y and the derivatives stay finite for every finite x.
// GeGLU (Gemma's MLP, hidden_activation gelu_pytorch_tanh): y = gelu(gate) * up with PyTorch's tanh approximation
//   gelu(g) = 0.5 g (1 + t), t = tanh(u), u = sqrt(2/pi) (g + 0.044715 g^3)
//   dUp = dY * gelu(g),  dGate = dY * up * (0.5 (1 + t) + 0.5 g (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 g^2))   (overwrite both)
// The kernels take tanh(u) = 1 - 2 / (exp(2u) + 1) (exact limits +-1 for large |u|, absolute error ~1e-7 near 0).
// SwiGLU has a Float4 path (16-byte loads, then the n % 4 tail element-wise) taken when every view is 16-byte aligned.
using System.Numerics;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Util;

namespace IlgpuTune.Kernels;

public static class Activation
{
    // ---- device kernels: grid-stride over n ----

    static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));

    static void SiluForwardKernel(FloatView x, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float v = x[i];
            y[i] = v * Sigmoid(v);
        }
    }

    static void SiluBackwardKernel(FloatView dY, FloatView x, long n, FloatView dX)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float v = x[i], s = Sigmoid(v);
            dX[i] = dY[i] * s * (1f + v * (1f - s));
        }
    }

    static void SwiGluForwardKernel(FloatView gate, FloatView up, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float g = gate[i];
            y[i] = g * Sigmoid(g) * up[i];
        }
    }

    static void SwiGluBackwardKernel(FloatView dY, FloatView gate, FloatView up, long n, FloatView dGate, FloatView dUp)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float g = gate[i], s = Sigmoid(g), d = dY[i];
            float u = up[i]; // read before the writes: dUp may alias up
            dUp[i] = d * g * s;
            dGate[i] = d * u * s * (1f + g * (1f - s));
        }
    }

    const float GeluC = 0.7978845608028654f, GeluA = 0.044715f; // sqrt(2/pi) in fp32, PyTorch's kappa

    static float TanhExp(float u) => 1f - 2f / (MathF.Exp(2f * u) + 1f);

    static void GeGluForwardKernel(FloatView gate, FloatView up, long n, FloatView y)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float g = gate[i], t = TanhExp(GeluC * (g + GeluA * g * g * g));
            y[i] = 0.5f * g * (1f + t) * up[i];
        }
    }

    static void GeGluBackwardKernel(FloatView dY, FloatView gate, FloatView up, long n, FloatView dGate, FloatView dUp)
    {
        for (long i = Grid.GlobalIndex.X; i < n; i += Launch.GridStride())
        {
            float g = gate[i], d = dY[i], u = up[i]; // read before the writes: dUp may alias up
            float t = TanhExp(GeluC * (g + GeluA * g * g * g));
            dUp[i] = d * 0.5f * g * (1f + t);
            dGate[i] = d * u * (0.5f * (1f + t) + 0.5f * g * (1f - t * t) * GeluC * (1f + 3f * GeluA * g * g));
        }
    }

    // Float4 variants: element-wise over quads [0, n/4), then the n % 4 tail elements by the first threads.
    static float SwiGlu(float g, float u) => g * Sigmoid(g) * u;

    static void SwiGluForwardVecKernel(FloatView gate, FloatView up, long n, FloatView y)
    {
        var g4 = gate.Cast<Float4>();
        var u4 = up.Cast<Float4>();
        var y4 = y.Cast<Float4>();
        long quads = n / 4;
        for (long i = Grid.GlobalIndex.X; i < quads; i += Launch.GridStride())
        {
            Float4 g = g4[i], u = u4[i];
            y4[i] = new Float4(SwiGlu(g.X, u.X), SwiGlu(g.Y, u.Y), SwiGlu(g.Z, u.Z), SwiGlu(g.W, u.W));
        }
        long tail = quads * 4 + Grid.GlobalIndex.X;
        if (tail < n) y[tail] = SwiGlu(gate[tail], up[tail]);
    }

    // dY, g, u -> (dGate, dUp) of one element
    static (float DGate, float DUp) SwiGluGrad(float d, float g, float u)
    {
        float s = Sigmoid(g);
        return (d * u * s * (1f + g * (1f - s)), d * g * s);
    }

    static void SwiGluBackwardVecKernel(FloatView dY, FloatView gate, FloatView up, long n, FloatView dGate, FloatView dUp)
    {
        var d4 = dY.Cast<Float4>();
        var g4 = gate.Cast<Float4>();
        var u4 = up.Cast<Float4>();
        var dg4 = dGate.Cast<Float4>();
        var du4 = dUp.Cast<Float4>();
        long quads = n / 4;
        for (long i = Grid.GlobalIndex.X; i < quads; i += Launch.GridStride())
        {
            Float4 d = d4[i], g = g4[i], u = u4[i]; // all read before the writes: dUp may alias up
            var (gx, ux) = SwiGluGrad(d.X, g.X, u.X);
            var (gy, uy) = SwiGluGrad(d.Y, g.Y, u.Y);
            var (gz, uz) = SwiGluGrad(d.Z, g.Z, u.Z);
            var (gw, uw) = SwiGluGrad(d.W, g.W, u.W);
            du4[i] = new Float4(ux, uy, uz, uw);
            dg4[i] = new Float4(gx, gy, gz, gw);
        }
        long tail = quads * 4 + Grid.GlobalIndex.X;
        if (tail < n)
        {
            var (dg, du) = SwiGluGrad(dY[tail], gate[tail], up[tail]);
            dUp[tail] = du;
            dGate[tail] = dg;
        }
    }

    // ---- launchers ----

    // x[n] -> y[n]
    public static void SiluForward(KernelRegistry k, FloatView x, long n, FloatView y)
    {
        Launch.Need(x, n, nameof(x)); Launch.Need(y, n, nameof(y));
        var kernel = k.Get<Action<KernelConfig, FloatView, long, FloatView>>(new("activation.silu.forward", SiluForwardKernel));
        kernel(Launch.Flat(k, n), x, n, y);
    }

    // dY[n], x[n] -> dX[n] (overwrites)
    public static void SiluBackward(KernelRegistry k, FloatView dY, FloatView x, long n, FloatView dX)
    {
        Launch.Need(dY, n, nameof(dY)); Launch.Need(x, n, nameof(x)); Launch.Need(dX, n, nameof(dX));
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, long, FloatView>>(
            new("activation.silu.backward", SiluBackwardKernel));
        kernel(Launch.Flat(k, n), dY, x, n, dX);
    }

    // gate[n], up[n] -> y[n]
    public static void SwiGluForward(KernelRegistry k, FloatView gate, FloatView up, long n, FloatView y)
    {
        Launch.Need(gate, n, nameof(gate)); Launch.Need(up, n, nameof(up)); Launch.Need(y, n, nameof(y));
        if (Launch.Aligned16(gate, up, y))
        {
            var vec = k.Get<Action<KernelConfig, FloatView, FloatView, long, FloatView>>(
                new("activation.swiglu.forward.v4", SwiGluForwardVecKernel));
            vec(Launch.Flat(k, Math.Max(n / 4, n % 4)), gate, up, n, y);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, long, FloatView>>(
            new("activation.swiglu.forward", SwiGluForwardKernel));
        kernel(Launch.Flat(k, n), gate, up, n, y);
    }

    // dY[n], gate[n], up[n] -> dGate[n], dUp[n] (overwrite)
    public static void SwiGluBackward(KernelRegistry k, FloatView dY, FloatView gate, FloatView up, long n, FloatView dGate, FloatView dUp)
    {
        Launch.Need(dY, n, nameof(dY)); Launch.Need(gate, n, nameof(gate)); Launch.Need(up, n, nameof(up));
        Launch.Need(dGate, n, nameof(dGate)); Launch.Need(dUp, n, nameof(dUp));
        if (Launch.Aligned16(dY, gate, up, dGate, dUp))
        {
            var vec = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, long, FloatView, FloatView>>(
                new("activation.swiglu.backward.v4", SwiGluBackwardVecKernel));
            vec(Launch.Flat(k, Math.Max(n / 4, n % 4)), dY, gate, up, n, dGate, dUp);
            return;
        }
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, long, FloatView, FloatView>>(
            new("activation.swiglu.backward", SwiGluBackwardKernel));
        kernel(Launch.Flat(k, n), dY, gate, up, n, dGate, dUp);
    }

    // gate[n], up[n] -> y[n]
    public static void GeGluForward(KernelRegistry k, FloatView gate, FloatView up, long n, FloatView y)
    {
        Launch.Need(gate, n, nameof(gate)); Launch.Need(up, n, nameof(up)); Launch.Need(y, n, nameof(y));
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, long, FloatView>>(new("activation.geglu.forward", GeGluForwardKernel));
        kernel(Launch.Flat(k, n), gate, up, n, y);
    }

    // dY[n], gate[n], up[n] -> dGate[n], dUp[n] (overwrite)
    public static void GeGluBackward(KernelRegistry k, FloatView dY, FloatView gate, FloatView up, long n, FloatView dGate, FloatView dUp)
    {
        Launch.Need(dY, n, nameof(dY)); Launch.Need(gate, n, nameof(gate)); Launch.Need(up, n, nameof(up));
        Launch.Need(dGate, n, nameof(dGate)); Launch.Need(dUp, n, nameof(dUp));
        var kernel = k.Get<Action<KernelConfig, FloatView, FloatView, FloatView, long, FloatView, FloatView>>(
            new("activation.geglu.backward", GeGluBackwardKernel));
        kernel(Launch.Flat(k, n), dY, gate, up, n, dGate, dUp);
    }

    // ---- CPU reference ----

    static T Sigmoid<T>(T x) where T : IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));

    public static void SiluForwardCpu<T>(ReadOnlySpan<T> x, Span<T> y) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * Sigmoid(x[i]);
    }

    public static void SiluBackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<T> x, Span<T> dX) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < x.Length; i++)
        {
            T s = Sigmoid(x[i]);
            dX[i] = dY[i] * s * (T.One + x[i] * (T.One - s));
        }
    }

    public static void SwiGluForwardCpu<T>(ReadOnlySpan<T> gate, ReadOnlySpan<T> up, Span<T> y) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < gate.Length; i++) y[i] = gate[i] * Sigmoid(gate[i]) * up[i];
    }

    public static void SwiGluBackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<T> gate, ReadOnlySpan<T> up, Span<T> dGate, Span<T> dUp)
        where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < gate.Length; i++)
        {
            T g = gate[i], s = Sigmoid(g), u = up[i];
            dUp[i] = dY[i] * g * s;
            dGate[i] = dY[i] * u * s * (T.One + g * (T.One - s));
        }
    }

    // gelu_pytorch_tanh(g) and its derivative
    static (T Gelu, T DGelu) GeluTanh<T>(T g) where T : IFloatingPointIeee754<T>
    {
        T c = T.CreateChecked(0.7978845608028654), a = T.CreateChecked(0.044715), half = T.CreateChecked(0.5);
        T t = T.Tanh(c * (g + a * g * g * g));
        return (half * g * (T.One + t), half * (T.One + t) + half * g * (T.One - t * t) * c * (T.One + T.CreateChecked(3) * a * g * g));
    }

    public static void GeGluForwardCpu<T>(ReadOnlySpan<T> gate, ReadOnlySpan<T> up, Span<T> y) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < gate.Length; i++) y[i] = GeluTanh(gate[i]).Gelu * up[i];
    }

    public static void GeGluBackwardCpu<T>(ReadOnlySpan<T> dY, ReadOnlySpan<T> gate, ReadOnlySpan<T> up, Span<T> dGate, Span<T> dUp)
        where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < gate.Length; i++)
        {
            var (gelu, dGelu) = GeluTanh(gate[i]);
            T u = up[i];
            dUp[i] = dY[i] * gelu;
            dGate[i] = dY[i] * u * dGelu;
        }
    }
}
