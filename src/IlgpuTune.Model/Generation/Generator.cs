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
        Cache = new KvCache(model.Config, model.Device, initialCapacity);
    }

    public CausalLM Model { get; }
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
    /// answer's text piece by piece as it becomes final (whole characters, no stop word).
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Random rng, Action<string>? onText = null)
    {
        options.Validate();
        if (promptIds.Count == 0 && _pending is null) throw new ArgumentException("the prompt is empty", nameof(promptIds));
        if (_decode is null && (options.StopWords.Count > 0 || onText is not null))
            throw new InvalidOperationException("stop words and streaming need the generator's decode function");
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
        Action<string>? onText = null)
    {
        if (conversationIds.Count == 0) throw new ArgumentException("the conversation is empty", nameof(conversationIds));
        int keep = 0, cached = Cache.Length, max = Math.Min(cached, conversationIds.Count - 1); // feed at least one token
        while (keep < max && _tokens[keep] == conversationIds[keep]) keep++;
        Cache.Truncate(keep);
        _tokens.RemoveRange(keep, _tokens.Count - keep);
        _pending = null;
        return Generate(conversationIds.Skip(keep).ToArray(), options, rng, onText);
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
