using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// PEFT LoRA linear: y = x·Wᵀ + bias + scaling · (dropout(x)·Aᵀ)·Bᵀ, with A[r, in], B[out, r];
    /// scaling = alpha / r (or alpha / √r with rsLoRA, see LoraScaling). A and B (and x) get grads; a 16-bit frozen base
    /// on tensor cores takes the fused path (LoraHalf), anything else is built from differentiable ops.
    /// </summary>
    public static Tensor LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scaling, float dropout, Random rng)
    {
        CheckLora(weight.Name, weight.Shape, loraA, loraB);
        if (OnTensorCores(x, loraA, loraB) && !weight.RequiresGrad)
        {
            RequireSameDevice("lora_linear", x, weight);
            if (x.Dim(-1) != weight.Dim(1)) throw new ArgumentException($"lora_linear: x {ShapeText(x.Shape)} does not fit weight {weight.Name} {ShapeText(weight.Shape)}");
            return LoraHalf(x, weight, null, bias, loraA, loraB, scaling, dropout, rng);
        }
        using var baseOut = Linear(x, weight, bias);
        return AddLoraBranch(baseOut, x, loraA, loraB, scaling, dropout, rng);
    }

    /// <summary>QLoRA: LoraLinear on a frozen 4-bit base, y = LinearNf4(x, W, bias) + scaling · (dropout(x)·Aᵀ)·Bᵀ.</summary>
    public static Tensor LoraLinear(Tensor x, Nf4Weight weight, Tensor? bias, Tensor loraA, Tensor loraB, float scaling, float dropout, Random rng)
    {
        CheckLora(weight.Name, weight.Shape, loraA, loraB);
        if (OnTensorCores(x, loraA, loraB) && ReferenceEquals(x.Device, weight.Device))
        {
            if (x.Dim(-1) != weight.InFeatures) throw new ArgumentException($"lora_linear: x {ShapeText(x.Shape)} does not fit weight {weight.Name} {ShapeText(weight.Shape)}");
            return LoraHalf(x, null, weight, bias, loraA, loraB, scaling, dropout, rng);
        }
        using var baseOut = LinearNf4(x, weight, bias);
        return AddLoraBranch(baseOut, x, loraA, loraB, scaling, dropout, rng);
    }

    /// <summary>PEFT's scaling: alpha / r, or alpha / sqrt(r) with use_rslora.</summary>
    public static float LoraScaling(float alpha, int r, bool useRsLora) => useRsLora ? alpha / MathF.Sqrt(r) : alpha / r;

    // weightShape [out, in], A [r, in], B [out, r]
    private static void CheckLora(string? weightName, int[] weightShape, Tensor loraA, Tensor loraB)
    {
        if (loraA.Dim(1) != weightShape[1] || loraB.Dim(0) != weightShape[0] || loraB.Dim(1) != loraA.Dim(0))
            throw new ArgumentException(
                $"lora: A {ShapeText(loraA.Shape)} and B {ShapeText(loraB.Shape)} do not fit weight {weightName} {ShapeText(weightShape)}");
    }

    private static bool OnTensorCores(Tensor x, Tensor loraA, Tensor loraB) =>
        x.Device.Matmuls.IsHalf && x.DType == DType.F32 &&
        loraA.DType == DType.F32 && loraB.DType == DType.F32 && ReferenceEquals(x.Device, loraA.Device) && ReferenceEquals(x.Device, loraB.Device);

    // baseOut + scaling · (dropout(x)·Aᵀ)·Bᵀ
    private static Tensor AddLoraBranch(Tensor baseOut, Tensor x, Tensor loraA, Tensor loraB, float scaling, float dropout, Random rng)
    {
        using var dropped = Dropout(x, dropout, rng);
        using var down = Linear(dropped, loraA);
        using var up = Linear(down, loraB);
        using var scaled = Scale(up, scaling);
        return Add(baseOut, scaled);
    }

    // The fused tensor-core LoRA linear (a dense 16-bit / fp32 frozen weight, or NF4 dequantized per product):
    //   xh = half(x) is cast once and feeds both the base product and the down projection (without dropout);
    //   y = xh·Wᵀ + bias (fp32), down = half(xh·Aᵀ), y += scaling · down·Bᵀ in the GEMM epilogue (alpha, beta 1).
    // Backward, dYh = half(dY) cast once:
    //   dDown = half(scaling · dYh·B); dX = dYh·W, += dDown·A in the epilogue (beta 1) when the down projection read x
    //   itself; dA = dDownᵀ·xh; dB = scaling · dYhᵀ·down; dBias = Σ_rows dY.
    // So the branch costs no separate scale, add or gradient-sum pass over [rows, out] / [rows, in], and x and dY are
    // rounded once. The roundings are those of the unfused path (which rounds down and scaling·dY to 16 bits too;
    // identical when scaling is a power of two).
    private static Tensor LoraHalf(Tensor x, Tensor? weight, Nf4Weight? quantized, Tensor? bias, Tensor loraA, Tensor loraB,
        float scaling, float dropout, Random rng)
    {
        const string op = "lora_linear";
        var dev = x.Device;
        var backend = dev.Backend;
        var dtype = dev.Matmuls.Matmul;
        if (weight is not null && weight.DType != DType.F32 && weight.DType != dtype)
            throw new ArgumentException($"{op}: weight {weight.Name} is {weight.DType}; this device's matmuls are {dev.Matmuls}");
        int outF = loraB.Dim(0), inF = loraA.Dim(1), r = loraA.Dim(0);
        int rows = (int)(x.Length / inF);
        if (bias is not null && (bias.Rank != 1 || bias.Dim(0) != outF))
            throw new ArgumentException($"{op}: bias {bias.Name} {ShapeText(bias.Shape)} does not fit [{outF}]");

        // Dropout on the branch's input is its own tape op; without it the branch reads x (and dX sums in place).
        var xa = dropout > 0 ? Dropout(x, dropout, rng) : null;
        // x's cast is shared with the other projections of x (Ops.ShareHalfCast); A's and B's are kept until written (chat
        // casts them once; a recorded forward saves them anyway), except in a checkpointed block's first forward: kept from
        // there to the recompute, they would add 0.3 GiB at 7B (r 64, all linears) to the peak at the start of backward.
        var xh = SharedCast(x, dtype, keep: false);
        var xah = xa is null ? xh.Alias() : CastRaw(xa, dtype);
        bool keep = !Tape.InCheckpointForward;
        var ah = SharedCast(loraA, dtype, keep);
        var bh = SharedCast(loraB, dtype, keep);
        var downH = Tensor.Empty(dev, dtype, rows, r);
        var y = EmptyF32(dev, WithLast(x.Shape, outF));

        Tensor? wh = null;
        if (weight is not null) wh = weight.DType == dtype ? weight.Alias() : CastRaw(weight, dtype);
        using (var w = quantized?.Dequantize(dtype))
            backend.MatMul(GemmLayout.NT, new(rows, outF, inF), xh, (w ?? wh)!, bias, 1f, false, y);
        backend.MatMul(GemmLayout.NT, new(rows, r, inF), xah, ah, null, 1f, false, downH);
        backend.MatMul(GemmLayout.NT, new(rows, outF, r), downH, bh, null, scaling, true, y);

        var saved = new List<Tensor> { xh, xah, ah, bh, downH };
        if (wh is not null) saved.Add(wh);
        if (!Tape.IsRecording(x, xa, loraA, loraB, bias))
        {
            foreach (var t in saved) t.Dispose();
            xa?.Dispose();
            return y;
        }
        var inShape = x.Shape;
        Tape.Record(op, [x, xa, loraA, loraB, bias], [y], ctx =>
        {
            // The last read of A's and B's casts this step (ah, bh stay alive as saved tensors).
            DropSharedCast(loraA);
            DropSharedCast(loraB);
            var dY = ctx.GradOutput()!;
            using var dYh = CastRaw(dY, dtype);
            using var dDownH = Tensor.Empty(dev, dtype, rows, r);
            backend.MatMul(GemmLayout.NN, new(rows, r, outF), dYh, bh, null, scaling, false, dDownH);
            if (ctx.NeedsGrad(0))
            {
                var dX = EmptyF32(dev, inShape);
                using (var w = quantized?.Dequantize(dtype))
                    backend.MatMul(GemmLayout.NN, new(rows, inF, outF), dYh, (w ?? wh)!, null, 1f, false, dX);
                if (xa is null)
                    backend.MatMul(GemmLayout.NN, new(rows, inF, r), dDownH, ah, null, 1f, true, dX);
                ctx.AddGrad(0, dX);
            }
            if (xa is not null && ctx.NeedsGrad(1))
            {
                var dXa = EmptyF32(dev, inShape);
                backend.MatMul(GemmLayout.NN, new(rows, inF, r), dDownH, ah, null, 1f, false, dXa);
                ctx.AddGrad(1, dXa);
            }
            if (ctx.NeedsGrad(2))
            {
                var dA = EmptyF32(dev, r, inF);
                backend.MatMul(GemmLayout.TN, new(r, inF, rows), dDownH, xah, null, 1f, false, dA);
                ctx.AddGrad(2, dA);
            }
            if (ctx.NeedsGrad(3))
            {
                var dB = EmptyF32(dev, outF, r);
                backend.MatMul(GemmLayout.TN, new(outF, r, rows), dYh, downH, null, scaling, false, dB);
                ctx.AddGrad(3, dB);
            }
            if (ctx.NeedsGrad(4))
            {
                var dBias = Tensor.Zeros(dev, DType.F32, outF);
                backend.SumRows(dY, dBias);
                ctx.AddGrad(4, dBias);
            }
        }, [.. saved]);
        xa?.Dispose();
        return y;
    }
}
