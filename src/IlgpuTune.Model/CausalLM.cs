// Decoder-only causal LM for Llama, Mistral, Qwen2 and InternLM2, built from config.json, with HF module names:
//   h = embed(ids); per layer: h += o_proj(attn(rope(q), rope(k), v)) of rmsnorm(h); h += down(silu(gate(x)) * up(x)) of rmsnorm(h)
//   logits = lm_head(rmsnorm(h))
// InternLM2 keeps its fused wqkv (rows grouped per KV head, formats.md §3.3) and splits q, k, v with a column gather, so
// LoRA on wqkv and its gradient stay in InternLM2's own layout.
using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed class DecoderLayer
{
    public required Tensor InputNorm { get; init; }
    public required Tensor PostAttentionNorm { get; init; }
    /// <summary>Separate q/k/v projections (Llama, Mistral, Qwen2); null for InternLM2.</summary>
    public LinearModule? QProj { get; init; }
    public LinearModule? KProj { get; init; }
    public LinearModule? VProj { get; init; }
    /// <summary>InternLM2's fused projection; null otherwise.</summary>
    public LinearModule? Wqkv { get; init; }
    public required LinearModule OProj { get; init; }
    public required LinearModule GateProj { get; init; }
    public required LinearModule UpProj { get; init; }
    public required LinearModule DownProj { get; init; }

    public IEnumerable<LinearModule> Linears =>
        new[] { QProj, KProj, VProj, Wqkv, OProj, GateProj, UpProj, DownProj }.OfType<LinearModule>();
}

public sealed partial class CausalLM : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters;
    private readonly Dictionary<string, Nf4Weight> _quantized;
    private readonly Tensor? _qIndex, _kIndex, _vIndex;

    private CausalLM(ModelConfig config, Device device, Dictionary<string, Tensor> parameters, Dictionary<string, Nf4Weight> quantized)
    {
        Config = config;
        Device = device;
        _parameters = parameters;
        _quantized = quantized;
        var n = Names.For(config);
        EmbedTokens = parameters[n.Embed];
        Norm = parameters[n.Norm];
        LmHead = config.TieWordEmbeddings ? EmbedTokens : parameters[n.Head];
        LinearModule Lin(string module, bool bias)
        {
            var b = bias ? parameters[module + ".bias"] : null;
            return quantized.TryGetValue(module + ".weight", out var q) ? new(module, q, b) : new(module, parameters[module + ".weight"], b);
        }
        Layers = Enumerable.Range(0, config.NumHiddenLayers).Select(i =>
        {
            var l = n.Layer(i);
            bool intern = config.Architecture == Architecture.InternLM2;
            return new DecoderLayer
            {
                InputNorm = parameters[l.InputNorm + ".weight"],
                PostAttentionNorm = parameters[l.PostNorm + ".weight"],
                QProj = intern ? null : Lin(l.Q, config.AttentionBias),
                KProj = intern ? null : Lin(l.K, config.AttentionBias),
                VProj = intern ? null : Lin(l.V, config.AttentionBias),
                Wqkv = intern ? Lin(l.Wqkv, config.AttentionBias) : null,
                OProj = Lin(l.O, config.OutputBias),
                GateProj = Lin(l.Gate, config.MlpBias),
                UpProj = Lin(l.Up, config.MlpBias),
                DownProj = Lin(l.Down, config.MlpBias),
            };
        }).ToArray();
        if (config.Architecture == Architecture.InternLM2)
        {
            var (q, k, v) = WqkvColumns(config);
            _qIndex = Tensor.FromArray(device, q, q.Length);
            _kIndex = Tensor.FromArray(device, k, k.Length);
            _vIndex = Tensor.FromArray(device, v, v.Length);
        }
    }

    public ModelConfig Config { get; }
    public Device Device { get; }

    /// <summary>Recompute each decoder layer's activations in backward instead of keeping them (Tape.Checkpoint).</summary>
    public bool GradientCheckpointing { get; set; }
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

    // ---- construction ----

    /// <summary>Every weight key with its shape, as transformers names them for this config.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> ExpectedWeights(ModelConfig c)
    {
        var n = Names.For(c);
        int h = c.HiddenSize, qOut = c.NumAttentionHeads * c.HeadDim, kvOut = c.NumKeyValueHeads * c.HeadDim, inter = c.IntermediateSize;
        var list = new List<(string, int[])> { (n.Embed + "", [c.VocabSize, h]) };
        void Lin(string module, int outF, int inF, bool bias)
        {
            list.Add((module + ".weight", [outF, inF]));
            if (bias) list.Add((module + ".bias", [outF]));
        }
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            var l = n.Layer(i);
            list.Add((l.InputNorm + ".weight", [h]));
            if (c.Architecture == Architecture.InternLM2) Lin(l.Wqkv, qOut + 2 * kvOut, h, c.AttentionBias);
            else
            {
                Lin(l.Q, qOut, h, c.AttentionBias);
                Lin(l.K, kvOut, h, c.AttentionBias);
                Lin(l.V, kvOut, h, c.AttentionBias);
            }
            Lin(l.O, h, qOut, c.OutputBias);
            list.Add((l.PostNorm + ".weight", [h]));
            Lin(l.Gate, inter, h, c.MlpBias);
            Lin(l.Up, inter, h, c.MlpBias);
            Lin(l.Down, h, inter, c.MlpBias);
        }
        list.Add((n.Norm, [h]));
        if (!c.TieWordEmbeddings) list.Add((n.Head, [c.VocabSize, h]));
        return list;
    }

    /// <summary>
    /// Builds the model from a weight source, checking every key and shape: a missing, unexpected or mis-shaped tensor is an
    /// error naming the key. <paramref name="shapeOf"/> returns null for an absent key; <paramref name="read"/> returns float32 data.
    /// <paramref name="quantization"/> (QLoRA): the decoder layers' linear weights are quantized to 4 bits (bnb defaults:
    /// blocks of 64, double quantization) one at a time as they are read, so neither the host nor the device ever holds
    /// the dense model; embeddings, norms, biases and the head stay fp32 (as transformers leaves them, formats.md §5.5).
    /// <paramref name="readQuantized"/> returns a weight already stored in 4 bits (a bitsandbytes checkpoint), null for a dense one.
    /// </summary>
    public static CausalLM FromWeights(ModelConfig config, Device device, IEnumerable<string> availableKeys,
        Func<string, long[]?> shapeOf, Func<string, float[]> read, string source, DType linearDtype = DType.F32,
        QuantType? quantization = null, Func<string, Nf4Weight?>? readQuantized = null)
    {
        if (linearDtype is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"linear weights are stored as F32, BF16 or F16, not {linearDtype}");
        var names = Names.For(config);
        var expected = ExpectedWeights(config);
        var expectedNames = expected.Select(e => e.Name).ToHashSet();
        var available = availableKeys.ToHashSet();
        var missing = expected.Where(e => !available.Contains(e.Name)).Select(e => e.Name).ToList();
        var unexpected = available.Where(k => !expectedNames.Contains(k) && !IsIgnorable(k, config)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InvalidDataException($"{source}: weights do not match {config.Architecture} config" +
                (missing.Count > 0 ? $"; missing: {Summarize(missing)}" : "") +
                (unexpected.Count > 0 ? $"; unexpected: {Summarize(unexpected)}" : ""));
        foreach (var (name, shape) in expected)
        {
            var actual = shapeOf(name)!;
            if (!actual.SequenceEqual(shape.Select(d => (long)d)))
                throw new InvalidDataException(
                    $"{source}: tensor '{name}' has shape [{string.Join(", ", actual)}], expected [{string.Join(", ", shape)}]");
        }
        var parameters = new Dictionary<string, Tensor>();
        var quantized = new Dictionary<string, Nf4Weight>();
        try
        {
            foreach (var (name, shape) in expected)
            {
                // Decoder linear weights may be 16-bit or 4-bit; the embedding and the head follow linearDtype (a frozen LoRA base:
                // the lookup widens 16-bit rows, the fused loss multiplies on tensor cores) but are never quantized; norms stay fp32.
                bool linear = shape.Length == 2 && name != names.Embed && name != names.Head;
                bool matrix = shape.Length == 2;
                if (readQuantized?.Invoke(name) is { } stored)
                {
                    if (!linear)
                    {
                        stored.Dispose();
                        throw new InvalidDataException($"{source}: tensor '{name}' is stored in 4 bits, but only decoder linear weights can be");
                    }
                    quantized[name] = stored;
                    continue;
                }
                if (linear && quantization is { } qt)
                {
                    using var dense = Tensor.FromArray(device, read(name), shape).Named(name);
                    quantized[name] = Nf4Weight.Quantize(dense, qt);
                    continue;
                }
                parameters[name] = (matrix && linearDtype != DType.F32
                    ? Tensor.FromBytes(device, linearDtype, IO.SafetensorsWriter.Encode(read(name), linearDtype).Span, shape)
                    : Tensor.FromArray(device, read(name), shape)).Named(name);
            }
        }
        catch
        {
            foreach (var t in parameters.Values) t.Dispose();
            foreach (var q in quantized.Values) q.Dispose();
            throw;
        }
        // The dense staging blocks of the quantized weights are free now: hand them back to the driver.
        if (quantized.Count > 0) device.Allocator.EmptyCache();
        return new CausalLM(config, device, parameters, quantized);
    }

    /// <summary>A randomly initialized model (normal(0, initializerRange), norms = 1), as transformers' _init_weights.</summary>
    public static CausalLM CreateRandom(ModelConfig config, Device device, int seed, float initializerRange = 0.02f)
    {
        var rng = new Random(seed);
        var shapes = ExpectedWeights(config).ToDictionary(e => e.Name, e => e.Shape);
        return FromWeights(config, device, shapes.Keys, k => shapes[k].Select(d => (long)d).ToArray(), name =>
        {
            var data = new float[Tensor.ShapeLength(shapes[name])];
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) Array.Fill(data, 1f);
            else if (!name.EndsWith(".bias", StringComparison.Ordinal))
                for (int i = 0; i < data.Length; i++) data[i] = initializerRange * Gaussian(rng);
            return data;
        }, "random init");
    }

    private static bool IsIgnorable(string key, ModelConfig c) =>
        key.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) // old checkpoints save the RoPE buffer
        || (c.TieWordEmbeddings && key == Names.For(c).Head);          // a tied head saved anyway is the embedding

    private static string Summarize(List<string> keys) =>
        string.Join(", ", keys.Take(8)) + (keys.Count > 8 ? $" … ({keys.Count} in all)" : "");

    internal static float Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    /// <summary>Column indices of q, k and v inside InternLM2's wqkv output ([nKV, G+2, D] grouping).</summary>
    public static (int[] Q, int[] K, int[] V) WqkvColumns(ModelConfig c)
    {
        int g = c.KvGroups, d = c.HeadDim;
        var q = new int[c.NumAttentionHeads * d];
        var k = new int[c.NumKeyValueHeads * d];
        var v = new int[c.NumKeyValueHeads * d];
        for (int head = 0; head < c.NumAttentionHeads; head++)
            for (int j = 0; j < d; j++)
                q[head * d + j] = ((head / g) * (g + 2) + head % g) * d + j;
        for (int kv = 0; kv < c.NumKeyValueHeads; kv++)
            for (int j = 0; j < d; j++)
            {
                k[kv * d + j] = (kv * (g + 2) + g) * d + j;
                v[kv * d + j] = (kv * (g + 2) + g + 1) * d + j;
            }
        return (q, k, v);
    }

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
        using var normed = FinalHidden(inputIds, batch, seq, positionIds, segmentIds, rng);
        using var targets = Tensor.FromArray(Device, ShiftLabels(labels, batch, seq, segmentIds), batch * seq);
        return Ops.LinearCrossEntropy(normed, LmHead, targets);
    }

    // Embedding, decoder layers and the final norm: [batch*seq, hidden].
    private Tensor FinalHidden(int[] inputIds, int batch, int seq, int[]? positionIds, int[]? segmentIds, Random? rng)
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
        var (cosData, sinData) = RotaryTables(positionIds);
        using var cos = Tensor.FromArray(Device, cosData, tokens, c.HeadDim / 2);
        using var sin = Tensor.FromArray(Device, sinData, tokens, c.HeadDim / 2);
        using var segments = segmentIds is null ? null : Tensor.FromArray(Device, segmentIds, tokens);
        // Packed rows as the trainer builds them (samples end to end, padding last) let attention skip the tiles between samples.
        bool sorted = segmentIds is not null && FlashAttentionHalf.SegmentsSorted(segmentIds, batch, seq);

        Func<Tensor, Tensor, Tensor, Tensor> Causal(Tensor? segs) =>
            (q, k, v) => Ops.Attention(q, k, v, segs, new AttentionShape(batch, seq, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim), sorted);
        var h = Ops.Embedding(ids, EmbedTokens);
        // With bf16 matmuls the layer inputs kept for the recompute are stored in bf16 (half the memory of the
        // checkpoints), so the residual stream is rounded to bf16 between layers, as a bf16 model has it.
        DType? store = GradientCheckpointing && Device.Matmuls.Matmul == DType.BF16 ? DType.BF16 : null;
        foreach (var layer in Layers)
        {
            // One seed per layer, so a checkpointed block re-draws the same dropout masks when it is recomputed.
            int seed = rng.Next();
            Tensor next;
            if (GradientCheckpointing)
            {
                if (store is { } d)
                {
                    var rounded = Ops.RoundTo(h, d);
                    h.Dispose();
                    h = rounded;
                }
                Tensor[] inputs = segments is null ? [h, cos, sin] : [h, cos, sin, segments];
                next = Tape.Checkpoint(t => Block(layer, t[0], t[1], t[2], new Random(seed), Causal(t.Length > 3 ? t[3] : null)), store, inputs);
            }
            else next = Block(layer, h, cos, sin, new Random(seed), Causal(segments));
            h.Dispose();
            h = next;
        }
        using (h)
            return Ops.RmsNorm(h, Norm, c.RmsNormEps);
    }

    // h[tokens, hidden] -> the layer's output. `attention` maps the roped q, k and v to the attention output, so training
    // (causal over the batch) and generation (over a KV cache) share the rest. A null rng is inference: no LoRA dropout.
    private Tensor Block(DecoderLayer layer, Tensor h, Tensor cos, Tensor sin, Random? rng, Func<Tensor, Tensor, Tensor, Tensor> attention)
    {
        var c = Config;
        Tensor q, k, v;
        using (var x = Ops.RmsNorm(h, layer.InputNorm, c.RmsNormEps))
        {
            if (layer.Wqkv is not null)
            {
                using var qkv = layer.Wqkv.Forward(x, rng);
                q = Ops.ColumnGather(qkv, _qIndex!);
                k = Ops.ColumnGather(qkv, _kIndex!);
                v = Ops.ColumnGather(qkv, _vIndex!);
            }
            else
            {
                q = layer.QProj!.Forward(x, rng);
                k = layer.KProj!.Forward(x, rng);
                v = layer.VProj!.Forward(x, rng);
            }
        }
        Tensor h2;
        using (q)
        using (k)
        using (v)
        using (var qr = Ops.Rope(q, cos, sin, c.NumAttentionHeads, c.HeadDim))
        using (var kr = Ops.Rope(k, cos, sin, c.NumKeyValueHeads, c.HeadDim))
        using (var attn = attention(qr, kr, v))
        using (var o = layer.OProj.Forward(attn, rng))
            h2 = Ops.Add(h, o);
        using (h2)
        using (var x2 = Ops.RmsNorm(h2, layer.PostAttentionNorm, c.RmsNormEps))
        using (var gate = layer.GateProj.Forward(x2, rng))
        using (var up = layer.UpProj.Forward(x2, rng))
        using (var act = Ops.SwiGlu(gate, up))
        using (var down = layer.DownProj.Forward(act, rng))
            return Ops.Add(h2, down);
    }

    public static int[] DefaultPositions(int batch, int seq)
    {
        var p = new int[batch * seq];
        for (int i = 0; i < p.Length; i++) p[i] = i % seq;
        return p;
    }

    /// <summary>cos/sin[tokens, headDim/2] for the positions, in fp32 as HF's rotary embedding computes them.</summary>
    public (float[] Cos, float[] Sin) RotaryTables(int[] positionIds)
    {
        var c = Config;
        double theta = c.RopeTheta;
        var scaling = c.RopeScaling;
        if (scaling.Type == "dynamic")
        {
            // Dynamic NTK grows theta once the sequence outgrows max_position_embeddings (formats.md §8.1).
            int len = positionIds.Length == 0 ? 0 : positionIds.Max() + 1;
            theta = RopeScaling.DynamicNtkTheta(c.HeadDim, theta, scaling.Factor, len, c.MaxPositionEmbeddings);
            scaling = RopeScaling.None;
        }
        var invFreq = scaling.InverseFrequencies(c.HeadDim, theta);
        var cos = new float[positionIds.Length * (c.HeadDim / 2)];
        var sin = new float[cos.Length];
        Rope.CosSinCpu(positionIds, invFreq, cos, sin);
        return (cos, sin);
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

    /// <summary>Forward + mean cross-entropy over supervised tokens. Returns (logits, loss); the caller disposes both.</summary>
    public (Tensor Logits, Tensor Loss) ForwardWithLoss(int[] inputIds, int[] labels, int batch, int seq,
        int[]? positionIds = null, int[]? segmentIds = null, Random? rng = null)
    {
        var logits = Forward(inputIds, batch, seq, positionIds, segmentIds, rng);
        using var targets = Tensor.FromArray(Device, ShiftLabels(labels, batch, seq, segmentIds), batch * seq);
        using var flat = Ops.Reshape(logits, batch * seq, Config.VocabSize);
        return (logits, Ops.CrossEntropy(flat, targets));
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
        _qIndex?.Dispose();
        _kIndex?.Dispose();
        _vIndex?.Dispose();
    }

    /// <summary>HF key names per architecture.</summary>
    internal sealed record Names(string Embed, string Norm, string Head, Func<int, LayerNames> Layer)
    {
        public static Names For(ModelConfig c) => c.Architecture == Architecture.InternLM2
            ? new("model.tok_embeddings.weight", "model.norm.weight", "output.weight", i => new LayerNames(
                $"model.layers.{i}.attention_norm", $"model.layers.{i}.ffn_norm", "", "", "", $"model.layers.{i}.attention.wqkv",
                $"model.layers.{i}.attention.wo", $"model.layers.{i}.feed_forward.w1", $"model.layers.{i}.feed_forward.w3",
                $"model.layers.{i}.feed_forward.w2"))
            : new("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", i => new LayerNames(
                $"model.layers.{i}.input_layernorm", $"model.layers.{i}.post_attention_layernorm", $"model.layers.{i}.self_attn.q_proj",
                $"model.layers.{i}.self_attn.k_proj", $"model.layers.{i}.self_attn.v_proj", "", $"model.layers.{i}.self_attn.o_proj",
                $"model.layers.{i}.mlp.gate_proj", $"model.layers.{i}.mlp.up_proj", $"model.layers.{i}.mlp.down_proj"));
    }

    internal sealed record LayerNames(string InputNorm, string PostNorm, string Q, string K, string V, string Wqkv, string O,
        string Gate, string Up, string Down);
}
