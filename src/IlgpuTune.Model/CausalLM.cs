// Decoder-only causal LM, driven by the config's ArchitectureSpec (Families.cs), with HF module names:
//   h = embed(ids) (× √hidden for Gemma); per layer:
//     h += [norm] o_proj(attn(rope(qnorm(q)), rope(knorm(k)), v)) of norm(h)
//     h += [norm] down(act(gate(x)) * up(x)) of norm(h)
//   logits = lm_head(norm(h))
// Fused projections (InternLM2 wqkv grouped per KV head, Phi-3 qkv_proj and gate_up_proj) stay fused and are split with
// a column gather, so LoRA on them and its gradient stay in the checkpoint's own layout, under PEFT's names.
// This file is the decoder; CausalLM.Schema.cs the weight schema, CausalLM.Loading.cs the loading.
using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed class DecoderLayer
{
    public required int Index { get; init; }
    public required Tensor InputNorm { get; init; }
    public required Tensor PostAttentionNorm { get; init; }
    /// <summary>Gemma's norms around the MLP (its PostAttentionNorm norms the attention output); null otherwise.</summary>
    public Tensor? PreFeedforwardNorm { get; init; }
    public Tensor? PostFeedforwardNorm { get; init; }
    /// <summary>Per-head RMSNorm weights [head_dim] of q and k (Qwen3, Gemma 3); null otherwise.</summary>
    public Tensor? QNorm { get; init; }
    public Tensor? KNorm { get; init; }
    /// <summary>Separate q/k/v projections; null when fused.</summary>
    public LinearModule? QProj { get; init; }
    public LinearModule? KProj { get; init; }
    public LinearModule? VProj { get; init; }
    /// <summary>The fused q/k/v projection (InternLM2 wqkv, Phi-3 qkv_proj); null otherwise.</summary>
    public LinearModule? Qkv { get; init; }
    public required LinearModule OProj { get; init; }
    /// <summary>Separate gate/up projections; null when fused.</summary>
    public LinearModule? GateProj { get; init; }
    public LinearModule? UpProj { get; init; }
    /// <summary>Phi-3's fused gate_up_proj; null otherwise.</summary>
    public LinearModule? GateUpProj { get; init; }
    /// <summary>The dense MLP's down projection; null in a sparse layer.</summary>
    public LinearModule? DownProj { get; init; }
    /// <summary>A sparse layer's router (Mixtral block_sparse_moe.gate, Qwen3-MoE mlp.gate) and experts; null when dense.</summary>
    public LinearModule? Router { get; init; }
    public IReadOnlyList<Expert>? Experts { get; init; }

    public IEnumerable<LinearModule> Linears =>
        new[] { QProj, KProj, VProj, Qkv, OProj, GateProj, UpProj, GateUpProj, DownProj, Router }.OfType<LinearModule>()
            .Concat(Experts?.SelectMany(e => new[] { e.Gate, e.Up, e.Down }) ?? []);
}

/// <summary>One expert of a sparse MLP: down(silu(gate(x)) * up(x)).</summary>
public sealed record Expert(LinearModule Gate, LinearModule Up, LinearModule Down);

public sealed partial class CausalLM : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters;
    private readonly Dictionary<string, Nf4Weight> _quantized;
    // Column maps: split a fused qkv / gate_up output; reorder q and k heads for partial rotary. Null when not needed.
    private readonly Tensor? _qIndex, _kIndex, _vIndex, _gateIndex, _upIndex, _qRotary, _kRotary;

    private CausalLM(ModelConfig config, Device device, Dictionary<string, Tensor> parameters, Dictionary<string, Nf4Weight> quantized,
        Device? embeddingHost = null)
    {
        Config = config;
        Device = device;
        _parameters = parameters;
        _quantized = quantized;
        _embeddingHost = embeddingHost;
        var s = config.Spec;
        EmbedTokens = parameters[s.Embed];
        Norm = parameters[s.FinalNorm];
        LmHead = config.TieWordEmbeddings ? EmbedTokens : parameters[s.Head];
        LinearModule Lin(string module, bool bias)
        {
            var b = bias ? parameters[module + ".bias"] : null;
            return quantized.TryGetValue(module + ".weight", out var q) ? new(module, q, b) : new(module, parameters[module + ".weight"], b);
        }
        Tensor? Weight(int i, string? module) => module is null ? null : parameters[s.Layer(i, module) + ".weight"];
        bool separate = s.QkvLayout == QkvLayout.Separate;
        Layers = Enumerable.Range(0, config.NumHiddenLayers).Select(i =>
        {
            bool sparse = config.IsSparseLayer(i), fusedMlp = s.GateUp is not null && !sparse, plain = !sparse && !fusedMlp;
            return new DecoderLayer
            {
                Index = i,
                InputNorm = Weight(i, s.InputNorm)!,
                PostAttentionNorm = Weight(i, s.PostAttentionNorm)!,
                PreFeedforwardNorm = Weight(i, s.PreFeedforwardNorm),
                PostFeedforwardNorm = Weight(i, s.PostFeedforwardNorm),
                QNorm = Weight(i, s.QNorm),
                KNorm = Weight(i, s.KNorm),
                QProj = separate ? Lin(s.Layer(i, s.Q), config.AttentionBias) : null,
                KProj = separate ? Lin(s.Layer(i, s.K), config.AttentionBias) : null,
                VProj = separate ? Lin(s.Layer(i, s.V), config.AttentionBias) : null,
                Qkv = separate ? null : Lin(s.Layer(i, s.Qkv!), config.AttentionBias),
                OProj = Lin(s.Layer(i, s.O), config.OutputBias),
                GateProj = plain ? Lin(s.Layer(i, s.Gate), config.MlpBias) : null,
                UpProj = plain ? Lin(s.Layer(i, s.Up), config.MlpBias) : null,
                GateUpProj = fusedMlp ? Lin(s.Layer(i, s.GateUp!), config.MlpBias) : null,
                DownProj = sparse ? null : Lin(s.Layer(i, s.Down), config.MlpBias),
                Router = sparse ? Lin(s.Layer(i, s.Router!), false) : null,
                Experts = sparse
                    ? Enumerable.Range(0, config.Moe!.NumExperts).Select(e => s.Layer(i, $"{s.Experts}.{e}.")).Select(x =>
                        new Expert(Lin(x + s.ExpertGate, false), Lin(x + s.ExpertUp, false), Lin(x + s.ExpertDown, false))).ToArray()
                    : null,
            };
        }).ToArray();
        Tensor Index(int[] columns) => Tensor.FromArray(device, columns, columns.Length);
        if (!separate)
        {
            var (q, k, v) = FusedQkvColumns(config);
            (_qIndex, _kIndex, _vIndex) = (Index(q), Index(k), Index(v));
        }
        if (s.GateUp is not null)
        {
            var (gate, up) = GateUpColumns(config);
            (_gateIndex, _upIndex) = (Index(gate), Index(up));
        }
        if (config.RotaryDim != config.HeadDim)
        {
            _qRotary = Index(PartialRotaryColumns(config.NumAttentionHeads, config.HeadDim, config.RotaryDim));
            _kRotary = Index(PartialRotaryColumns(config.NumKeyValueHeads, config.HeadDim, config.RotaryDim));
        }
    }

    public ModelConfig Config { get; }
    public Device Device { get; }

    /// <summary>Recompute each decoder layer's activations in backward instead of keeping them (Tape.Checkpoint).</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>With <see cref="GradientCheckpointing"/>: the layer inputs it keeps wait in host memory until their layer's
    /// backward (IOpBackend.HostOffload; where the device has none, they stay on the device).</summary>
    public bool OffloadCheckpoints { get; set; }

    /// <summary>The input embedding; with <see cref="EmbeddingOnHost"/> a frozen table in host memory, not on <see cref="Device"/>.</summary>
    public Tensor EmbedTokens { get; }
    public DecoderLayer[] Layers { get; }
    public Tensor Norm { get; }
    /// <summary>The output head; the embedding table itself when tie_word_embeddings.</summary>
    public Tensor LmHead { get; }

    /// <summary>
    /// Every dense weight under its HF checkpoint key, in checkpoint order (a tied head appears once, as the embedding). The
    /// 4-bit linear weights of a quantized model are in <see cref="QuantizedWeights"/> instead.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _parameters;

    /// <summary>The decoder linear weights held in 4 bits (QLoRA), under their HF keys; empty for a dense model.</summary>
    public IReadOnlyDictionary<string, Nf4Weight> QuantizedWeights => _quantized;

    /// <summary>Every weight key in checkpoint order, dense and quantized (a tied head omitted).</summary>
    public IEnumerable<string> WeightNames => ExpectedWeights(Config).Select(e => e.Name)
        .Where(n => _parameters.ContainsKey(n) || _quantized.ContainsKey(n));

    /// <summary>Number of base-model weights (a 4-bit weight counts its original elements).</summary>
    public long ParameterCount => _parameters.Values.Sum(t => t.Length) + _quantized.Values.Sum(q => q.Length);

    public IEnumerable<LinearModule> Linears => Layers.SelectMany(l => l.Linears);

    /// <summary>Trainable tensors: those with RequiresGrad (all weights for full fine-tuning; LoRA A/B otherwise).</summary>
    public IEnumerable<Tensor> TrainableParameters =>
        _parameters.Values.Concat(Linears.SelectMany(l => new[] { l.LoraA, l.LoraB }.OfType<Tensor>())).Where(t => t.RequiresGrad);

    // ---- training setup ----

    /// <summary>Full fine-tuning: every weight trainable.</summary>
    public void SetFullFineTuning()
    {
        if (_quantized.Count > 0)
            throw new InvalidOperationException($"full fine-tuning needs fp32 weights; {_quantized.Keys.First()} is 4-bit (QLoRA trains LoRA adapters only)");
        if (_parameters.Values.FirstOrDefault(p => p.DType != DType.F32) is { } half)
            throw new InvalidOperationException($"full fine-tuning needs fp32 weights; {half.Name} is {half.DType} (load with F32 linear weights)");
        foreach (var p in _parameters.Values) p.RequiresGrad = true;
    }

    /// <summary>
    /// Attaches LoRA to every targeted linear (PEFT init: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0) and freezes the base.
    /// </summary>
    public IReadOnlyList<LinearModule> ApplyLora(LoraConfig lora, int seed)
    {
        var rng = new Random(seed);
        foreach (var p in _parameters.Values) p.RequiresGrad = false;
        var targeted = Linears.Where(l => lora.Targets(l.Name)).ToList();
        if (targeted.Count == 0)
            throw new ArgumentException($"LoRA target_modules [{string.Join(", ", lora.TargetModules)}] match no linear layer of {Config.Architecture}");
        foreach (var l in targeted)
        {
            float bound = 1f / MathF.Sqrt(l.InFeatures);
            var a = new float[lora.R * l.InFeatures];
            for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * bound;
            l.AttachLora(lora, Tensor.FromArray(Device, a, lora.R, l.InFeatures), Tensor.Zeros(Device, DType.F32, l.OutFeatures, lora.R));
        }
        return targeted;
    }

    // ---- forward ----

    /// <summary>
    /// Logits[batch, seq, vocab] for ids[batch*seq]. <paramref name="positionIds"/> defaults to 0..seq-1 per row;
    /// <paramref name="segmentIds"/> (packed rows) keeps samples from attending to each other.
    /// </summary>
    public Tensor Forward(int[] inputIds, int batch, int seq, int[]? positionIds = null, int[]? segmentIds = null, Random? rng = null)
    {
        using var normed = FinalHidden(inputIds, batch, seq, positionIds, segmentIds, rng);
        using var logits = Ops.Linear(normed, LmHead);
        return Ops.Reshape(logits, batch, seq, Config.VocabSize);
    }

    /// <summary>
    /// The training loss alone: mean cross-entropy of the shifted labels, with the output projection fused into the loss in
    /// chunks (Ops.LinearCrossEntropy), so [tokens, vocab] logits are never all resident.
    /// </summary>
    public Tensor Loss(int[] inputIds, int[] labels, int batch, int seq, int[]? positionIds = null, int[]? segmentIds = null, Random? rng = null)
    {
        // output_router_logits: transformers adds router_aux_loss_coef × the load-balancing loss of every sparse layer.
        using var router = Config.Moe is { OutputRouterLogits: true } && Layers.Any(l => l.Router is not null) ? new RouterLog() : null;
        using var normed = FinalHidden(inputIds, batch, seq, positionIds, segmentIds, rng, router);
        using var targets = Tensor.FromArray(Device, ShiftLabels(labels, batch, seq, segmentIds), batch * seq);
        var loss = Ops.LinearCrossEntropy(normed, LmHead, targets);
        if (router is null) return loss;
        using (loss)
        using (var aux = router.AuxLoss())
            return WithRouterAuxLoss(loss, aux);
    }

    // The router logits and routings of one forward's sparse layers, for the load-balancing loss.
    private sealed class RouterLog : IDisposable
    {
        private readonly List<Tensor> _logits = [];
        private readonly List<MoeRouting> _routings = [];

        public void Add(Tensor logits, MoeRouting routing)
        {
            _logits.Add(logits);
            _routings.Add(routing);
        }

        public Tensor AuxLoss() => Ops.MoeLoadBalancingLoss(_logits, _routings, attentionMask: null);

        public void Dispose()
        {
            foreach (var t in _logits) t.Dispose();
            foreach (var r in _routings) r.Dispose();
        }
    }

    // Embedding, decoder layers and the final norm: [batch*seq, hidden].
    private Tensor FinalHidden(int[] inputIds, int batch, int seq, int[]? positionIds, int[]? segmentIds, Random? rng, RouterLog? router = null)
    {
        var c = Config;
        int tokens = batch * seq;
        if (inputIds.Length != tokens) throw new ArgumentException($"{inputIds.Length} input ids for batch {batch} × seq {seq}");
        for (int i = 0; i < tokens; i++)
            if ((uint)inputIds[i] >= (uint)c.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(inputIds), $"input id {inputIds[i]} at position {i} is outside the vocabulary [0, {c.VocabSize})");
        positionIds ??= DefaultPositions(batch, seq);
        rng ??= new Random(0);

        using var ids = Tensor.FromArray(Device, inputIds, tokens);
        using var rope = new RopeTables(this, positionIds);
        using var segments = segmentIds is null ? null : Tensor.FromArray(Device, segmentIds, tokens);
        // Packed rows as the trainer builds them (samples end to end, padding last) let attention skip the tiles between samples.
        bool sorted = segmentIds is not null && FlashAttentionHalf.SegmentsSorted(segmentIds, batch, seq);

        Func<Tensor, Tensor, Tensor, Tensor> Causal(DecoderLayer layer, Tensor? segs) =>
            (q, k, v) => Ops.Attention(q, k, v, segs, AttentionShapeOf(layer, batch, seq), sorted);
        var h = Embed(ids, inputIds);
        // With bf16 matmuls the layer inputs kept for the recompute are stored in bf16 (half the memory of the
        // checkpoints), so the residual stream is rounded to bf16 between layers, as a bf16 model has it.
        DType? store = GradientCheckpointing && Device.Matmuls.Matmul == DType.BF16 ? DType.BF16 : null;
        var offload = GradientCheckpointing && OffloadCheckpoints && Device.Backend.HostOffload is { } host ? new OffloadChain(host) : null;
        foreach (var layer in Layers)
        {
            // One seed per layer, so a checkpointed block re-draws the same dropout masks when it is recomputed.
            int seed = rng.Next();
            var (cos, sin) = rope.For(layer);
            Tensor next;
            // A sparse layer whose router logits feed the aux loss keeps its activations: a checkpoint would log them twice.
            if (GradientCheckpointing && !(router is not null && layer.Router is not null))
            {
                if (store is { } d)
                {
                    var rounded = Ops.RoundTo(h, d);
                    h.Dispose();
                    h = rounded;
                }
                Tensor[] inputs = segments is null ? [h, cos, sin] : [h, cos, sin, segments];
                next = Tape.Checkpoint(t => Block(layer, t[0], t[1], t[2], new Random(seed), Causal(layer, t.Length > 3 ? t[3] : null)), store, offload, inputs);
            }
            else next = Block(layer, h, cos, sin, new Random(seed), Causal(layer, segments), router);
            h.Dispose();
            h = next;
        }
        using (h)
            return RmsNorm(h, Norm);
    }

    // The layer's attention: its sliding window, the softmax scale.
    private AttentionShape AttentionShapeOf(DecoderLayer layer, int batch, int seq)
    {
        var c = Config;
        return new AttentionShape(batch, seq, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.SlidingWindow(layer.Index), AttentionScale);
    }

    // query_pre_attn_scalar^-0.5 (Gemma); null = the kernels' 1/sqrt(head_dim).
    private float? AttentionScale => Config.QueryPreAttnScalar is { } s ? (float)(1.0 / Math.Sqrt(s)) : null;

    // ids[tokens] -> h[tokens, hidden]; Gemma scales by √hidden rounded to the embedding's dtype, as transformers does.
    private Tensor Embed(Tensor ids, int[] hostIds)
    {
        var h = Lookup(ids, hostIds);
        if (!Config.Spec.ScaleEmbeddings) return h;
        float scale = MathF.Sqrt(Config.HiddenSize);
        if (EmbedTokens.DType == DType.BF16) scale = HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(scale));
        else if (EmbedTokens.DType == DType.F16) scale = (float)(Half)scale;
        using (h)
            return Ops.Scale(h, scale);
    }

    // transformers' nn.Embedding(vocab, hidden, padding_idx=pad_token_id): the pad row gets no gradient from the lookup
    // (the tied head's still reaches it). Pad positions take their rows as constants: h·keep + stop_grad(h)·(1 − keep).
    private Tensor Lookup(Tensor ids, int[] hostIds)
    {
        var h = _embeddingHost is null ? Ops.Embedding(ids, EmbedTokens) : HostLookup(hostIds);
        if (!Tape.IsRecording(EmbedTokens) || Config.PadTokenId is not { } pad || Array.IndexOf(hostIds, pad) < 0) return h;
        int width = Config.HiddenSize;
        var keep = new float[hostIds.Length * width];
        var drop = new float[keep.Length];
        for (int t = 0; t < hostIds.Length; t++)
            Array.Fill(hostIds[t] == pad ? drop : keep, 1f, t * width, width);
        using var keepMask = Tensor.FromArray(Device, keep, hostIds.Length, width);
        using var dropMask = Tensor.FromArray(Device, drop, hostIds.Length, width);
        Tensor constant;
        using (Tape.NoGrad())
            constant = Ops.Mul(h, dropMask);
        using (h)
        using (constant)
        using (var kept = Ops.Mul(h, keepMask))
            return Ops.Add(kept, constant);
    }

    // RMSNorm with the family's scale: w, or (1 + w) (Gemma), over the last dim.
    private Tensor RmsNorm(Tensor x, Tensor weight) =>
        Ops.RmsNorm(x, weight, Config.RmsNormEps, unitOffset: Config.Spec.NormStyle == NormStyle.OnePlusWeight);

    // x[tokens, heads*headDim] -> the same with each head RMS-normed by weight[headDim] (Qwen3/Gemma 3 q_norm, k_norm).
    private Tensor HeadNorm(Tensor x, Tensor weight)
    {
        int tokens = x.Dim(0), width = x.Dim(1), d = weight.Dim(0);
        using var heads = Ops.Reshape(x, tokens * (width / d), d);
        using var normed = RmsNorm(heads, weight);
        return Ops.Reshape(normed, tokens, width);
    }

    // q/k[tokens, heads*headDim] -> normed (q/k norm), reordered for partial rotary, roped.
    private Tensor PositionQueryOrKey(Tensor x, Tensor? norm, Tensor? rotaryColumns, Tensor cos, Tensor sin, int heads)
    {
        var c = Config;
        Tensor t = x;
        if (norm is not null) t = HeadNorm(x, norm);
        if (rotaryColumns is not null)
        {
            var reordered = Ops.ColumnGather(t, rotaryColumns);
            if (!ReferenceEquals(t, x)) t.Dispose();
            t = reordered;
        }
        var roped = Ops.Rope(t, cos, sin, heads, c.HeadDim);
        if (!ReferenceEquals(t, x)) t.Dispose();
        return roped;
    }

    // h[tokens, hidden] -> the layer's output. `attention` maps the roped q, k and v to the attention output, so training
    // (causal over the batch) and generation (over a KV cache) share the rest. A null rng is inference: no LoRA dropout.
    private Tensor Block(DecoderLayer layer, Tensor h, Tensor cos, Tensor sin, Random? rng, Func<Tensor, Tensor, Tensor, Tensor> attention,
        RouterLog? router = null)
    {
        var c = Config;
        Tensor q, k, v;
        using (var x = RmsNorm(h, layer.InputNorm))
        {
            if (layer.Qkv is not null)
            {
                using var qkv = layer.Qkv.Forward(x, rng);
                q = Ops.ColumnGather(qkv, _qIndex!);
                k = Ops.ColumnGather(qkv, _kIndex!);
                v = Ops.ColumnGather(qkv, _vIndex!);
            }
            else
            {
                using var shared = Ops.ShareHalfCast(x); // q, k and v round x to 16 bits once
                q = layer.QProj!.Forward(x, rng);
                k = layer.KProj!.Forward(x, rng);
                v = layer.VProj!.Forward(x, rng);
            }
        }
        Tensor h2;
        using (q)
        using (k)
        using (v)
        using (var qr = PositionQueryOrKey(q, layer.QNorm, _qRotary, cos, sin, c.NumAttentionHeads))
        using (var kr = PositionQueryOrKey(k, layer.KNorm, _kRotary, cos, sin, c.NumKeyValueHeads))
        using (var attn = attention(qr, kr, v))
        using (var o = layer.OProj.Forward(attn, rng))
        {
            if (layer.PreFeedforwardNorm is null) h2 = Ops.Add(h, o);
            else
                using (var normed = RmsNorm(o, layer.PostAttentionNorm))
                    h2 = Ops.Add(h, normed);
        }
        using (h2)
        using (var x2 = RmsNorm(h2, layer.PreFeedforwardNorm ?? layer.PostAttentionNorm))
        using (var mlp = layer.Router is null ? Mlp(layer, x2, rng) : SparseMlp(layer, x2, rng, router))
        {
            if (layer.PostFeedforwardNorm is null) return Ops.Add(h2, mlp);
            using var normed = RmsNorm(mlp, layer.PostFeedforwardNorm);
            return Ops.Add(h2, normed);
        }
    }

    // x[tokens, hidden] -> down(act(gate(x)) * up(x)) [tokens, hidden].
    private Tensor Mlp(DecoderLayer layer, Tensor x, Random? rng)
    {
        Tensor gate, up;
        if (layer.GateUpProj is not null)
        {
            using var gateUp = layer.GateUpProj.Forward(x, rng);
            gate = Ops.ColumnGather(gateUp, _gateIndex!);
            up = Ops.ColumnGather(gateUp, _upIndex!);
        }
        else
        {
            using var shared = Ops.ShareHalfCast(x); // gate and up round x to 16 bits once
            gate = layer.GateProj!.Forward(x, rng);
            up = layer.UpProj!.Forward(x, rng);
        }
        using (gate)
        using (up)
        using (var act = Activation(gate, up))
            return layer.DownProj!.Forward(act, rng);
    }

    // x[tokens, hidden] -> Σ_k weight_k · expert_k(x) [tokens, hidden]: softmax top-k routing, each expert's tokens gathered
    // and run as one product per linear (Ops.MoeExperts), so activations scale with the routed rows, not with the experts.
    private Tensor SparseMlp(DecoderLayer layer, Tensor x, Random? rng, RouterLog? router)
    {
        var moe = Config.Moe!;
        var logits = layer.Router!.Forward(x, rng);
        var routing = Ops.MoeRoute(logits, moe.NumExpertsPerTok, moe.NormTopKProb);
        try
        {
            return Ops.MoeExperts(x, routing, (e, xe) =>
            {
                var expert = layer.Experts![e];
                using var shared = Ops.ShareHalfCast(xe);
                using var gate = expert.Gate.Forward(xe, rng);
                using var up = expert.Up.Forward(xe, rng);
                using var act = Ops.SwiGlu(gate, up);
                return expert.Down.Forward(act, rng);
            });
        }
        finally
        {
            if (router is null)
            {
                routing.Dispose();
                logits.Dispose();
            }
            else router.Add(logits, routing);
        }
    }

    private Tensor Activation(Tensor gate, Tensor up) => Config.HiddenAct switch
    {
        "silu" => Ops.SwiGlu(gate, up),
        _ => Ops.GeGlu(gate, up), // gelu_pytorch_tanh, as ModelConfig admits no other

    };

    public static int[] DefaultPositions(int batch, int seq)
    {
        var p = new int[batch * seq];
        for (int i = 0; i < p.Length; i++) p[i] = i % seq;
        return p;
    }

    /// <summary>cos/sin[tokens, headDim/2] of the global (full-attention) layers for the positions, in fp32 as HF's rotary embedding computes them.</summary>
    public (float[] Cos, float[] Sin) RotaryTables(int[] positionIds) => RotaryTables(positionIds, local: false);

    /// <summary>
    /// cos/sin[tokens, headDim/2] for the positions: the global table, or with <paramref name="local"/> the sliding layers'
    /// own (Gemma 3: rope_local_base_freq, default scaling). With partial rotary the dims past RotaryDim/2 get cos 1, sin 0
    /// (the decoder reorders q and k heads so those are the pass-through dims).
    /// </summary>
    public (float[] Cos, float[] Sin) RotaryTables(int[] positionIds, bool local)
    {
        var c = Config;
        double theta = local ? c.LocalRopeTheta!.Value : c.RopeTheta;
        var scaling = local ? RopeScaling.None : c.RopeScaling;
        int rotary = c.RotaryDim, half = c.HeadDim / 2;
        if (scaling.Type == "dynamic")
        {
            // Dynamic NTK grows theta once the sequence outgrows max_position_embeddings (formats.md §8.1).
            int len = positionIds.Length == 0 ? 0 : positionIds.Max() + 1;
            theta = RopeScaling.DynamicNtkTheta(rotary, theta, scaling.Factor, len, c.MaxPositionEmbeddings);
            scaling = RopeScaling.None;
        }
        // longrope switches to its long factors once the sequence outgrows the original context, as transformers' update does.
        var invFreq = scaling.Type == "longrope"
            ? scaling.LongRope(rotary, theta, positionIds.Length > 0 && positionIds.Max() + 1 > scaling.OriginalMaxPositionEmbeddings)
            : scaling.InverseFrequencies(rotary, theta);
        var cos = new float[positionIds.Length * (rotary / 2)];
        var sin = new float[cos.Length];
        Rope.CosSinCpu(positionIds, invFreq, cos, sin);
        if (scaling.AttentionFactor != 1)
        {
            float a = (float)scaling.AttentionFactor;
            for (int i = 0; i < cos.Length; i++)
            {
                cos[i] *= a;
                sin[i] *= a;
            }
        }
        if (rotary == c.HeadDim) return (cos, sin);
        var fullCos = new float[positionIds.Length * half];
        var fullSin = new float[fullCos.Length];
        Array.Fill(fullCos, 1f);
        for (int t = 0; t < positionIds.Length; t++)
        {
            Array.Copy(cos, t * (rotary / 2), fullCos, t * half, rotary / 2);
            Array.Copy(sin, t * (rotary / 2), fullSin, t * half, rotary / 2);
        }
        return (fullCos, fullSin);
    }

    // The device cos/sin tables of one forward: the global pair, and the sliding layers' pair when their base differs.
    private sealed class RopeTables : IDisposable
    {
        private readonly CausalLM _model;
        private readonly (Tensor Cos, Tensor Sin) _global;
        private readonly (Tensor Cos, Tensor Sin)? _local;

        public RopeTables(CausalLM model, int[] positions)
        {
            _model = model;
            _global = Upload(model, model.RotaryTables(positions, local: false), positions.Length);
            if (model.Config.LocalRopeTheta is not null && model.Layers.Any(l => model.Config.SlidingWindow(l.Index) > 0))
                _local = Upload(model, model.RotaryTables(positions, local: true), positions.Length);
        }

        public (Tensor Cos, Tensor Sin) For(DecoderLayer layer) =>
            _local is { } l && _model.Config.SlidingWindow(layer.Index) > 0 ? l : _global;

        private static (Tensor, Tensor) Upload(CausalLM m, (float[] Cos, float[] Sin) t, int tokens) =>
            (Tensor.FromArray(m.Device, t.Cos, tokens, m.Config.HeadDim / 2), Tensor.FromArray(m.Device, t.Sin, tokens, m.Config.HeadDim / 2));

        public void Dispose()
        {
            _global.Cos.Dispose();
            _global.Sin.Dispose();
            _local?.Cos.Dispose();
            _local?.Sin.Dispose();
        }
    }

    /// <summary>
    /// HF's causal-LM shift: targets[t] = labels[t+1], -100 at each row's end. With segment ids (packed rows) a target in
    /// another segment is ignored too, so each sample's loss is what it would be alone.
    /// </summary>
    public static int[] ShiftLabels(int[] labels, int batch, int seq, int[]? segmentIds = null)
    {
        var targets = new int[batch * seq];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < seq; t++)
            {
                int i = b * seq + t;
                bool last = t == seq - 1 || (segmentIds is not null && segmentIds[i + 1] != segmentIds[i]);
                targets[i] = last ? Ops.IgnoreIndex : labels[i + 1];
            }
        return targets;
    }

    /// <summary>
    /// Forward + the loss transformers returns: mean cross-entropy over supervised tokens, plus router_aux_loss_coef × the
    /// load-balancing loss when the config has output_router_logits. Returns (logits, loss); the caller disposes both.
    /// </summary>
    public (Tensor Logits, Tensor Loss) ForwardWithLoss(int[] inputIds, int[] labels, int batch, int seq,
        int[]? positionIds = null, int[]? segmentIds = null, Random? rng = null)
    {
        var (logits, ce, aux) = ForwardWithLosses(inputIds, labels, batch, seq, positionIds, segmentIds, rng);
        if (aux is null) return (logits, ce);
        using (ce)
        using (aux)
            return (logits, WithRouterAuxLoss(ce, aux));
    }

    /// <summary>
    /// Forward + the cross-entropy and, with output_router_logits on a sparse model, the load-balancing loss [1] apart (else
    /// null); <see cref="WithRouterAuxLoss"/> combines them. The caller disposes all three.
    /// </summary>
    public (Tensor Logits, Tensor CrossEntropy, Tensor? AuxLoss) ForwardWithLosses(int[] inputIds, int[] labels, int batch, int seq,
        int[]? positionIds = null, int[]? segmentIds = null, Random? rng = null)
    {
        using var router = Config.Moe is { OutputRouterLogits: true } && Layers.Any(l => l.Router is not null) ? new RouterLog() : null;
        Tensor logits;
        using (var normed = FinalHidden(inputIds, batch, seq, positionIds, segmentIds, rng, router))
        using (var flatLogits = Ops.Linear(normed, LmHead))
            logits = Ops.Reshape(flatLogits, batch, seq, Config.VocabSize);
        using var targets = Tensor.FromArray(Device, ShiftLabels(labels, batch, seq, segmentIds), batch * seq);
        using var flat = Ops.Reshape(logits, batch * seq, Config.VocabSize);
        return (logits, Ops.CrossEntropy(flat, targets), router?.AuxLoss());
    }

    /// <summary>loss + router_aux_loss_coef × aux, as transformers' MoE causal LMs add it.</summary>
    public Tensor WithRouterAuxLoss(Tensor loss, Tensor aux)
    {
        using var scaled = Ops.Scale(aux, (float)Config.Moe!.RouterAuxLossCoef);
        using var scalar = Ops.Reshape(scaled, loss.Shape);
        return Ops.Add(loss, scalar);
    }

    public void ZeroGrad()
    {
        foreach (var t in _parameters.Values.Concat(Linears.SelectMany(l => new[] { l.LoraA, l.LoraB }.OfType<Tensor>())))
        {
            t.Grad?.Dispose();
            t.Grad = null;
        }
    }

    public void Dispose()
    {
        ZeroGrad();
        foreach (var l in Linears)
        {
            l.LoraA?.Dispose();
            l.LoraB?.Dispose();
        }
        foreach (var t in _parameters.Values) t.Dispose();
        foreach (var q in _quantized.Values) q.Dispose();
        foreach (var t in new[] { _qIndex, _kIndex, _vIndex, _gateIndex, _upIndex, _qRotary, _kRotary }) t?.Dispose();
        _embeddingHost?.Dispose();
    }
}
