using IlgpuTune.Core;

namespace IlgpuTune.Model;

/// <summary>LoRA settings as PEFT's LoraConfig names them.</summary>
public sealed record LoraConfig(int R, float Alpha, float Dropout, IReadOnlyList<string> TargetModules, bool UseRsLora = false)
{
    public float Scaling => Ops.LoraScaling(Alpha, R, UseRsLora);

    /// <summary>PEFT's check_target_module_exists for a list: the name equals a target or ends with "." + target.</summary>
    public bool Targets(string moduleName) =>
        TargetModules.Any(t => moduleName == t || moduleName.EndsWith("." + t, StringComparison.Ordinal));
}

/// <summary>
/// An nn.Linear with HF's module path (e.g. "model.layers.0.self_attn.q_proj"), optionally carrying a LoRA adapter. The base
/// weight is a dense tensor (<see cref="Weight"/>) or, for QLoRA, a frozen 4-bit one (<see cref="Quantized"/>).
/// </summary>
public sealed class LinearModule
{
    public LinearModule(string name, Tensor weight, Tensor? bias) => (Name, Weight, Bias) = (name, weight, bias);

    public LinearModule(string name, Nf4Weight weight, Tensor? bias) => (Name, Quantized, Bias) = (name, weight, bias);

    public string Name { get; }
    /// <summary>The dense base weight [out, in]; null when the base is 4-bit.</summary>
    public Tensor? Weight { get; }
    /// <summary>The 4-bit base weight; null when the base is dense.</summary>
    public Nf4Weight? Quantized { get; }
    public Tensor? Bias { get; }
    public Tensor? LoraA { get; private set; }
    public Tensor? LoraB { get; private set; }
    public LoraConfig? Lora { get; private set; }
    /// <summary>Off: Forward is the base layer alone (PEFT's disable_adapter), e.g. for a DPO reference pass.</summary>
    public bool AdapterEnabled { get; set; } = true;

    public int InFeatures => Weight?.Dim(1) ?? Quantized!.InFeatures;
    public int OutFeatures => Weight?.Dim(0) ?? Quantized!.OutFeatures;

    /// <summary>PEFT's saved key prefix for this module's adapter tensors.</summary>
    public string PeftPrefix => "base_model.model." + Name;

    /// <summary>Attaches A[r, in] and B[out, r] (takes ownership; both trainable).</summary>
    public void AttachLora(LoraConfig config, Tensor a, Tensor b)
    {
        if (a.Rank != 2 || b.Rank != 2 || a.Dim(0) != config.R || a.Dim(1) != InFeatures || b.Dim(0) != OutFeatures || b.Dim(1) != config.R)
            throw new ArgumentException(
                $"{Name}: lora_A [{string.Join(", ", a.Shape)}] / lora_B [{string.Join(", ", b.Shape)}] do not fit r={config.R}, " +
                $"in={InFeatures}, out={OutFeatures}");
        LoraA?.Dispose();
        LoraB?.Dispose();
        a.Name = PeftPrefix + ".lora_A.weight";
        b.Name = PeftPrefix + ".lora_B.weight";
        a.RequiresGrad = b.RequiresGrad = true;
        (Lora, LoraA, LoraB) = (config, a, b);
    }

    /// <summary>y = x·Wᵀ + bias (+ the LoRA branch). A null <paramref name="rng"/> is inference: LoRA dropout off.</summary>
    public Tensor Forward(Tensor x, Random? rng)
    {
        var lora = AdapterEnabled ? Lora : null;
        float dropout = rng is null || lora is null ? 0f : lora.Dropout;
        return (lora, Weight) switch
        {
            (null, { } w) => Ops.Linear(x, w, Bias),
            (null, null) => Ops.LinearNf4(x, Quantized!, Bias),
            (_, { } w) => Ops.LoraLinear(x, w, Bias, LoraA!, LoraB!, lora.Scaling, dropout, rng ?? NoDropout),
            _ => Ops.LoraLinear(x, Quantized!, Bias, LoraA!, LoraB!, lora.Scaling, dropout, rng ?? NoDropout),
        };
    }

    // Ops.LoraLinear draws nothing from it when the dropout is 0.
    private static readonly Random NoDropout = new(0);
}
