// Autoregressive generation with a KV cache: prefill the new tokens, then one token per step, each chosen by Sampling.
// The generator keeps a conversation: every Generate call continues after the tokens of the earlier calls (prompts and
// answers, stop tokens included), which stay in the cache, so a chat turn only prefills its own new tokens.
using IlgpuTune.Core;

namespace IlgpuTune.Model.Generation;

public enum StopReason
{
    /// <summary>An EOS token was generated (it is in Tokens, not in Text).</summary>
    EosToken,
    /// <summary>The answer ended with a stop word (cut from Text).</summary>
    StopWord,
    MaxNewTokens,
    /// <summary>The conversation reached the model's max_position_embeddings (transformers would warn and go on into
    /// positions the model never saw; we stop).</summary>
    MaxPositionEmbeddings,
    /// <summary>The caller cancelled (Ctrl-C in chat): the answer so far.</summary>
    Cancelled,
}

/// <summary>Tokens: every generated token, the stopping one included. Text: the decoded answer without EOS or stop word.</summary>
public sealed record GenerationResult(int[] Tokens, string Text, StopReason Reason);

public sealed class Generator : IDisposable
{
    private readonly Func<IReadOnlyList<int>, string>? _decode;
    private readonly List<int> _tokens = [];
    // The last generated token: in the conversation, not yet run through the model (its logits were never needed).
    private int? _pending;

    /// <param name="decode">ids -> text (the tokenizer's decode, special tokens kept); needed for stop words and text.</param>
    public Generator(CausalLM model, Func<IReadOnlyList<int>, string>? decode = null, int initialCapacity = 256)
    {
        Model = model;
        _decode = decode;
        MaxPositions = GenerationConfig.MaxPositions(model.Config);
        Cache = new KvCache(model.Config, model.Device, initialCapacity);
    }

    public CausalLM Model { get; }

    /// <summary>The most tokens a conversation may hold (max_position_embeddings; null with dynamic rope scaling).</summary>
    public int? MaxPositions { get; }
    public KvCache Cache { get; }

    /// <summary>The conversation so far: prompts and generated tokens.</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Forgets the conversation.</summary>
    public void Reset()
    {
        Cache.Clear();
        _tokens.Clear();
        _pending = null;
    }

    /// <summary>
    /// Appends <paramref name="promptIds"/> to the conversation and generates an answer. <paramref name="onText"/> receives the
    /// answer's text piece by piece as it becomes final (whole characters, no stop word). <paramref name="cancel"/> ends the
    /// answer after the current token. Throws ArgumentException when the prompt does not fit in <see cref="MaxPositions"/>.
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Random rng, Action<string>? onText = null,
        CancellationToken cancel = default)
    {
        options.Validate();
        if (promptIds.Count == 0 && _pending is null) throw new ArgumentException("the prompt is empty", nameof(promptIds));
        if (_decode is null && (options.StopWords.Count > 0 || onText is not null))
            throw new InvalidOperationException("stop words and streaming need the generator's decode function");
        if (MaxPositions is { } max && _tokens.Count + promptIds.Count > max)
            throw new ArgumentException($"the conversation would be {_tokens.Count + promptIds.Count} tokens; the model's " +
                $"max_position_embeddings is {max}", nameof(promptIds));
        var input = new List<int>(promptIds.Count + 1);
        if (_pending is { } p) input.Add(p);
        input.AddRange(promptIds);
        var stream = _decode is null ? null : new TextStream(_decode, options.StopWords);
        var eos = options.EosTokenIds.ToHashSet();
        var generated = new List<int>();

        var logits = Step(input);
        _tokens.AddRange(promptIds);
        _pending = null;
        while (true)
        {
            int id = Sampling.Next(logits, _tokens, options, rng);
            _tokens.Add(id);
            _pending = id;
            generated.Add(id);
            StopReason? reason = null;
            if (eos.Contains(id)) reason = StopReason.EosToken;
            else if (stream is not null)
            {
                Emit(stream.Push(id), onText);
                if (stream.StopWord is not null) reason = StopReason.StopWord;
            }
            if (reason is null && generated.Count >= options.MaxNewTokens) reason = StopReason.MaxNewTokens;
            if (reason is null && _tokens.Count >= MaxPositions) reason = StopReason.MaxPositionEmbeddings;
            if (reason is null && cancel.IsCancellationRequested) reason = StopReason.Cancelled;
            if (reason is { } r)
            {
                if (stream is not null) Emit(stream.Flush(), onText);
                return new GenerationResult([.. generated], stream?.Text ?? "", r);
            }
            logits = Step([id]);
            _pending = null;
        }
    }

    /// <summary>
    /// Generates after the whole conversation <paramref name="conversationIds"/> (e.g. a chat template rendered again each
    /// turn): the cached tokens it starts with are kept, the rest of the cache is dropped and the remainder prefilled.
    /// </summary>
    public GenerationResult GenerateFromConversation(IReadOnlyList<int> conversationIds, GenerationOptions options, Random rng,
        Action<string>? onText = null, CancellationToken cancel = default)
    {
        if (conversationIds.Count == 0) throw new ArgumentException("the conversation is empty", nameof(conversationIds));
        int keep = 0, cached = Cache.Length, max = Math.Min(cached, conversationIds.Count - 1); // feed at least one token
        while (keep < max && _tokens[keep] == conversationIds[keep]) keep++;
        Cache.Truncate(keep);
        _tokens.RemoveRange(keep, _tokens.Count - keep);
        _pending = null;
        return Generate(conversationIds.Skip(keep).ToArray(), options, rng, onText, cancel);
    }

    private static void Emit(string text, Action<string>? onText)
    {
        if (text.Length > 0) onText?.Invoke(text);
    }

    // Runs new tokens through the model; the last one's logits on the host.
    private float[] Step(IReadOnlyList<int> ids)
    {
        using var logits = Model.ForwardCached(ids, Cache);
        return logits.ToFloatArray();
    }

    public void Dispose() => Cache.Dispose();
}
