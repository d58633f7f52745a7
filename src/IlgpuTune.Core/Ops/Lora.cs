namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>
    /// PEFT LoRA linear: y = x·Wᵀ + bias + scaling · (dropout(x)·Aᵀ)·Bᵀ, with A[r, in], B[out, r];
    /// scaling = alpha / r (or alpha / √r with rsLoRA, see LoraScaling). Built from differentiable ops, so A and B (and x) get grads.
    /// </summary>
    public static Tensor LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scaling, float dropout, Random rng)
    {
        CheckLora(weight.Name, weight.Shape, loraA, loraB);
        using var baseOut = Linear(x, weight, bias);
        return AddLoraBranch(baseOut, x, loraA, loraB, scaling, dropout, rng);
    }

    /// <summary>QLoRA: LoraLinear on a frozen 4-bit base, y = LinearNf4(x, W, bias) + scaling · (dropout(x)·Aᵀ)·Bᵀ.</summary>
    public static Tensor LoraLinear(Tensor x, Nf4Weight weight, Tensor? bias, Tensor loraA, Tensor loraB, float scaling, float dropout, Random rng)
    {
        CheckLora(weight.Name, weight.Shape, loraA, loraB);
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

    // baseOut + scaling · (dropout(x)·Aᵀ)·Bᵀ
    private static Tensor AddLoraBranch(Tensor baseOut, Tensor x, Tensor loraA, Tensor loraB, float scaling, float dropout, Random rng)
    {
        using var dropped = Dropout(x, dropout, rng);
        using var down = Linear(dropped, loraA);
        using var up = Linear(down, loraB);
        using var scaled = Scale(up, scaling);
        return Add(baseOut, scaled);
    }
}
