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

/// <summary>An nn.Linear with HF's module path (e.g. "model.layers.0.self_attn.q_proj"), optionally carrying a LoRA adapter.</summary>
public sealed class LinearModule(string name, Tensor weight, Tensor? bias)
{
    public string Name { get; } = name;
    public Tensor Weight { get; } = weight;
    public Tensor? Bias { get; } = bias;
    public Tensor? LoraA { get; private set; }
    public Tensor? LoraB { get; private set; }
    public LoraConfig? Lora { get; private set; }

    public int InFeatures => Weight.Dim(1);
    public int OutFeatures => Weight.Dim(0);

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
    public Tensor Forward(Tensor x, Random? rng) =>
        Lora is null
            ? Ops.Linear(x, Weight, Bias)
            : Ops.LoraLinear(x, Weight, Bias, LoraA!, LoraB!, Lora.Scaling, rng is null ? 0f : Lora.Dropout, rng ?? NoDropout);

    // Ops.LoraLinear draws nothing from it when the dropout is 0.
    private static readonly Random NoDropout = new(0);
}
