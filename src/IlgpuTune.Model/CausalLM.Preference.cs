// What preference training needs of the model: per-token log-probs of the shifted labels through the fused
// projection (Ops.LinearLogProbs), and the base model alone (LoRA switched off) for the DPO reference.
using IlgpuTune.Core;

namespace IlgpuTune.Model;

public sealed partial class CausalLM
{
    /// <summary>
    /// logp[batch*seq]: log p(labels[t+1] | ids[..t]) at each position t (HF's shift; 0 where the shifted label is -100, at
    /// a row's end or across a packed sample boundary), without [tokens, vocab] logits resident.
    /// </summary>
    public Tensor TokenLogProbs(int[] inputIds, int[] labels, int batch, int seq, int[]? positionIds = null, int[]? segmentIds = null,
        Random? rng = null)
    {
        using var normed = FinalHidden(inputIds, batch, seq, positionIds, segmentIds, rng);
        using var targets = Tensor.FromArray(Device, ShiftLabels(labels, batch, seq, segmentIds), batch * seq);
        return Ops.LinearLogProbs(normed, LmHead, targets);
    }

    /// <summary>The last hidden states [batch*seq, hidden] (after the final norm): what a reward model's value head reads.</summary>
    public Tensor HiddenStates(int[] inputIds, int batch, int seq, int[]? positionIds = null, int[]? segmentIds = null, Random? rng = null) =>
        FinalHidden(inputIds, batch, seq, positionIds, segmentIds, rng);

    /// <summary>Switches every LoRA adapter off (PEFT's disable_adapter) until the returned scope is disposed.</summary>
    public IDisposable DisableAdapters()
    {
        var on = Linears.Where(l => l.AdapterEnabled).ToList();
        foreach (var l in on) l.AdapterEnabled = false;
        return new Scope(() => { foreach (var l in on) l.AdapterEnabled = true; });
    }

    private sealed class Scope(Action exit) : IDisposable
    {
        public void Dispose() => exit();
    }
}
