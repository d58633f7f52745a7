using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

/// <summary>
/// One sparse MLP layer's routing (Ops.MoeRoute): T tokens, E experts, K = num_experts_per_tok, slot = t*K + k.
/// Weights F32 [T, K] (on the tape: their gradient reaches the router logits), Experts I32 [T, K], Order I32 [T*K] (the slots
/// sorted by expert, stable), Counts/Offsets on the host: expert e owns sorted rows Offsets[e] .. Offsets[e] + Counts[e].
/// </summary>
public sealed class MoeRouting(Tensor weights, Tensor experts, Tensor order, int[] counts, int topK) : IDisposable
{
    public Tensor Weights { get; } = weights;
    public Tensor Experts { get; } = experts;
    public Tensor Order { get; } = order;
    public IReadOnlyList<int> Counts { get; } = counts;
    public IReadOnlyList<int> Offsets { get; } = ExclusiveSums(counts);
    public int TopK { get; } = topK;
    public int NumExperts => Counts.Count;
    public int Tokens => Experts.Dim(0);

    static int[] ExclusiveSums(int[] counts)
    {
        var o = new int[counts.Length];
        for (int e = 1; e < counts.Length; e++) o[e] = o[e - 1] + counts[e - 1];
        return o;
    }

    public void Dispose()
    {
        Weights.Dispose();
        Experts.Dispose();
        Order.Dispose();
    }
}

public static partial class Ops
{
    /// <summary>
    /// The router of MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock: routerLogits [T, E] (= gate(x), fp32) -> softmax, top-k
    /// (descending; ties to the lower expert), weights divided by their sum when <paramref name="normTopKProb"/> (Mixtral: always;
    /// Qwen3-MoE: config norm_topk_prob), and the slots sorted by expert on the device (counting sort; only the E counts come to the host).
    /// </summary>
    public static MoeRouting MoeRoute(Tensor routerLogits, int topK, bool normTopKProb)
    {
        const string op = "moe_route";
        RequireF32(op, routerLogits, "router logits");
        if (routerLogits.Rank != 2) throw new ArgumentException($"{op}: router logits must be [tokens, experts], are {ShapeText(routerLogits.Shape)}");
        int tokens = routerLogits.Dim(0), e = routerLogits.Dim(1);
        if (topK < 1 || topK > e) throw new ArgumentException($"{op}: num_experts_per_tok {topK} must be in 1..{e}");
        var dev = routerLogits.Device;
        var weights = EmptyF32(dev, tokens, topK);
        var experts = Tensor.Empty(dev, DType.I32, tokens, topK);
        B(routerLogits).MoeRouterForward(routerLogits, topK, normTopKProb, weights, experts);
        var order = Tensor.Empty(dev, DType.I32, tokens * topK);
        int[] counts;
        using (var c = Tensor.Empty(dev, DType.I32, e))
        {
            B(routerLogits).MoeSort(experts, e, c, order);
            counts = c.ToIntArray();
        }
        if (Tape.IsRecording(routerLogits))
        {
            var sl = routerLogits.Alias();
            var se = experts.Alias();
            Tape.Record(op, [routerLogits], [weights], ctx =>
            {
                var dW = ctx.GradOutput()!;
                var dLogits = EmptyF32(dW.Device, sl.Shape);
                B(dW).MoeRouterBackward(dW, sl, se, normTopKProb, dLogits);
                ctx.AddGrad(0, dLogits);
            }, sl, se);
        }
        return new MoeRouting(weights, experts, order, counts, topK);
    }

    /// <summary>Expert <paramref name="expert"/>'s token rows of x [T, H] -> [Counts[expert], H] (token order); backward adds them back.</summary>
    public static Tensor MoeGather(Tensor x, MoeRouting routing, int expert)
    {
        const string op = "moe_gather";
        RequireF32(op, x, "x");
        if (x.Rank != 2 || x.Dim(0) != routing.Tokens) throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} is not [{routing.Tokens}, hidden]");
        if ((uint)expert >= (uint)routing.NumExperts) throw new ArgumentOutOfRangeException(nameof(expert), $"{op}: expert {expert} of {routing.NumExperts}");
        int hidden = x.Dim(1), offset = routing.Offsets[expert], topK = routing.TopK;
        var xe = EmptyF32(x.Device, routing.Counts[expert], hidden);
        B(x).MoeGather(x, routing.Order, offset, topK, xe);
        if (Tape.IsRecording(x))
        {
            var so = routing.Order.Alias();
            var xShape = x.Shape;
            Tape.Record(op, [x], [xe], ctx =>
            {
                var dXe = ctx.GradOutput()!;
                var dX = Tensor.Zeros(dXe.Device, DType.F32, xShape);
                B(dXe).MoeGatherBackward(dXe, so, offset, topK, dX);
                ctx.AddGrad(0, dX);
            }, so);
        }
        return xe;
    }

    /// <summary>
    /// Every expert's token rows of x [T, H] at once: [e] = [Counts[e], H], null where Counts[e] = 0. One tape entry, so the
    /// backward scatters all experts' gradients into one dX (MoeGather per expert would add E full-size gradients).
    /// </summary>
    public static Tensor?[] MoeDispatch(Tensor x, MoeRouting routing)
    {
        const string op = "moe_dispatch";
        RequireF32(op, x, "x");
        if (x.Rank != 2 || x.Dim(0) != routing.Tokens) throw new ArgumentException($"{op}: x {ShapeText(x.Shape)} is not [{routing.Tokens}, hidden]");
        int hidden = x.Dim(1), topK = routing.TopK;
        var outputs = new Tensor?[routing.NumExperts];
        var experts = new List<int>();
        for (int e = 0; e < outputs.Length; e++)
        {
            if (routing.Counts[e] == 0) continue;
            outputs[e] = EmptyF32(x.Device, routing.Counts[e], hidden);
            B(x).MoeGather(x, routing.Order, routing.Offsets[e], topK, outputs[e]!);
            experts.Add(e);
        }
        if (Tape.IsRecording(x) && experts.Count > 0)
        {
            var so = routing.Order.Alias();
            var offsets = routing.Offsets;
            var xShape = x.Shape;
            Tape.Record(op, [x], [.. experts.Select(e => outputs[e]!)], ctx =>
            {
                var dX = Tensor.Zeros(so.Device, DType.F32, xShape);
                for (int j = 0; j < experts.Count; j++)
                    if (ctx.GradOutput(j) is { } dXe) B(dXe).MoeGatherBackward(dXe, so, offsets[experts[j]], topK, dX);
                ctx.AddGrad(0, dX);
            }, so);
        }
        return outputs;
    }

    /// <summary>
    /// y [T, H] = Σ_k weights[t, k] · (output of expert experts[t, k] for token t): expertOutputs[e] is expert e's [Counts[e], H]
    /// (rows as MoeGather gave them; null where Counts[e] = 0). Gradients reach the outputs and the routing weights.
    /// </summary>
    public static Tensor MoeCombine(IReadOnlyList<Tensor?> expertOutputs, MoeRouting routing)
    {
        const string op = "moe_combine";
        if (expertOutputs.Count != routing.NumExperts) throw new ArgumentException($"{op}: {expertOutputs.Count} outputs for {routing.NumExperts} experts");
        int hidden = -1;
        for (int e = 0; e < expertOutputs.Count; e++)
        {
            var ye = expertOutputs[e];
            if (ye is null)
            {
                if (routing.Counts[e] != 0) throw new ArgumentException($"{op}: expert {e} has {routing.Counts[e]} rows but no output");
                continue;
            }
            RequireF32(op, ye, $"expert {e} output");
            if (hidden < 0) hidden = ye.Dim(-1);
            if (ye.Rank != 2 || ye.Dim(0) != routing.Counts[e] || ye.Dim(1) != hidden)
                throw new ArgumentException($"{op}: expert {e} output {ShapeText(ye.Shape)} is not [{routing.Counts[e]}, {hidden}]");
        }
        if (hidden < 0) throw new ArgumentException($"{op}: no expert output");
        var dev = routing.Weights.Device;
        int topK = routing.TopK;
        var y = Tensor.Zeros(dev, DType.F32, routing.Tokens, hidden);
        for (int e = 0; e < expertOutputs.Count; e++)
            if (expertOutputs[e] is { } ye) B(ye).MoeCombine(ye, routing.Weights, routing.Order, routing.Offsets[e], topK, y);

        Tensor?[] inputs = [routing.Weights, .. expertOutputs];
        if (Tape.IsRecording(inputs))
        {
            var sw = routing.Weights.Alias();
            var so = routing.Order.Alias();
            var sy = expertOutputs.Select(t => t?.Alias()).ToArray();
            var offsets = routing.Offsets;
            Tape.Record(op, inputs, [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dWeights = Tensor.Zeros(dY.Device, DType.F32, sw.Shape);
                for (int e = 0; e < sy.Length; e++)
                {
                    if (sy[e] is not { } ye) continue;
                    var dYe = EmptyF32(dY.Device, ye.Shape);
                    B(dY).MoeCombineBackward(dY, ye, sw, so, offsets[e], topK, dYe, dWeights);
                    if (ctx.NeedsGrad(1 + e)) ctx.AddGrad(1 + e, dYe);
                    else dYe.Dispose();
                }
                if (ctx.NeedsGrad(0)) ctx.AddGrad(0, dWeights);
                else dWeights.Dispose();
            }, [sw, so, .. sy.OfType<Tensor>()]);
        }
        return y;
    }

    /// <summary>
    /// The experts of a sparse MLP as grouped products: MoeDispatch, then each expert e with tokens runs <paramref name="expert"/>(e,
    /// its rows [Counts[e], H]) (e.g. down(act(gate(xe)) * up(xe)) with that expert's Linear / LoRA / NF4 weights), then MoeCombine.
    /// Activations scale with the routed rows (T*K), not with T*E.
    /// </summary>
    public static Tensor MoeExperts(Tensor x, MoeRouting routing, Func<int, Tensor, Tensor> expert)
    {
        var inputs = MoeDispatch(x, routing);
        var outputs = new Tensor?[routing.NumExperts];
        try
        {
            for (int e = 0; e < outputs.Length; e++)
            {
                if (inputs[e] is not { } xe) continue;
                outputs[e] = expert(e, xe);
                xe.Dispose(); // the expert's ops keep what their backward needs
                inputs[e] = null;
            }
            return MoeCombine(outputs, routing);
        }
        finally
        {
            foreach (var t in inputs.Concat(outputs)) t?.Dispose();
        }
    }

    /// <summary>
    /// transformers' load_balancing_loss_func over the MoE layers: routerLogits[l] [T, E] and routings[l] of each layer,
    /// attentionMask F32 [T] (1 = real token, 0 = padding) or null -> scalar [1]
    /// E · Σ_e f_e P_e, f_e = tokens routed to e (over the K choices) / D, P_e = Σ m_t softmax(logits_t)_e / D, D = layers · Σ_t m_t.
    /// The caller adds router_aux_loss_coef times it to the LM loss (output_router_logits). Gradient flows through P only, as in torch.
    /// </summary>
    public static Tensor MoeLoadBalancingLoss(IReadOnlyList<Tensor> routerLogits, IReadOnlyList<MoeRouting> routings, Tensor? attentionMask)
    {
        const string op = "moe_aux_loss";
        if (routerLogits.Count == 0 || routerLogits.Count != routings.Count)
            throw new ArgumentException($"{op}: {routerLogits.Count} router logits for {routings.Count} routings");
        var first = routerLogits[0];
        var dev = first.Device;
        int e = first.Dim(-1), tokens = first.Dim(0), topK = routings[0].TopK;
        for (int l = 0; l < routerLogits.Count; l++)
        {
            var lg = routerLogits[l];
            RequireF32(op, lg, "router logits");
            if (lg.Rank != 2 || lg.Dim(0) != tokens || lg.Dim(1) != e || routings[l].Tokens != tokens || routings[l].TopK != topK)
                throw new ArgumentException($"{op}: layer {l} router logits {ShapeText(lg.Shape)} differ from [{tokens}, {e}] top-{topK}");
        }
        if (attentionMask is not null)
        {
            RequireF32(op, attentionMask, "attention mask");
            if (attentionMask.Length != tokens) throw new ArgumentException($"{op}: attention mask has {attentionMask.Length} entries for {tokens} tokens");
        }
        float[] counts, probs;
        using (var c = Tensor.Zeros(dev, DType.F32, e))
        using (var p = Tensor.Zeros(dev, DType.F32, e))
        {
            for (int l = 0; l < routerLogits.Count; l++) B(first).MoeAuxStats(routerLogits[l], routings[l].Experts, attentionMask, c, p);
            (counts, probs) = (c.ToFloatArray(), p.ToFloatArray());
        }
        // Σ counts = K · D: every unmasked (layer, token) row adds K.
        double d = counts.Sum(x => (double)x) / topK, sum = 0;
        for (int i = 0; i < e; i++) sum += (double)counts[i] * probs[i];
        float loss = d > 0 ? (float)(e * sum / (d * d)) : 0f;
        var y = Tensor.FromArray(dev, [loss], 1);

        Tensor?[] inputs = [.. routerLogits];
        if (Tape.IsRecording(inputs) && d > 0)
        {
            var sl = routerLogits.Select(t => t.Alias()).ToArray();
            var sm = attentionMask?.Alias();
            Tape.Record(op, inputs, [y], ctx =>
            {
                float g = ctx.GradOutput()!.Item();
                var grad = new float[e];
                for (int i = 0; i < e; i++) grad[i] = (float)(g * e * counts[i] / (d * d));
                using var gradT = Tensor.FromArray(dev, grad, e);
                for (int l = 0; l < sl.Length; l++)
                {
                    if (!ctx.NeedsGrad(l)) continue;
                    var dLogits = EmptyF32(dev, sl[l].Shape);
                    B(sl[l]).MoeAuxBackward(sl[l], sm, gradT, dLogits);
                    ctx.AddGrad(l, dLogits);
                }
            }, [.. sl, .. sm is null ? Array.Empty<Tensor>() : [sm]]);
        }
        return y;
    }
}
