using LLama;
using LLama.Common;
using LLama.Native;

namespace IlgpuTune.Deploy.Tests;

/// <summary>llama.cpp (through LLamaSharp's CPU build) on one GGUF file: its tokenizer and its next-token argmaxes.</summary>
public sealed class LlamaCpp : IDisposable
{
    readonly LLamaWeights _weights;
    readonly LLamaContext _context;

    public LlamaCpp(string gguf)
    {
        var p = new ModelParams(gguf) { ContextSize = 128, GpuLayerCount = 0, Threads = 2, BatchSize = 128, UBatchSize = 128 };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
    }

    /// <summary>llama.cpp's tokens of <paramref name="text"/>: special tokens recognized, BOS added when the GGUF says so.</summary>
    public int[] Tokenize(string text, bool addSpecial) => [.. _context.Tokenize(text, addSpecial, special: true).Select(t => (int)t)];

    /// <summary>argmax of the logits after each of <paramref name="tokens"/> (one forward pass from position 0).</summary>
    public int[] Argmaxes(IReadOnlyList<int> tokens)
    {
        _context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, true);
        Check(_context.Decode(batch));
        return [.. Enumerable.Range(0, tokens.Count).Select(i => ArgMax(_context.NativeHandle.GetLogitsIth(i)))];
    }

    /// <summary><paramref name="n"/> greedy tokens after <paramref name="prompt"/>, token by token with llama.cpp's KV cache.</summary>
    public int[] Greedy(IReadOnlyList<int> prompt, int n)
    {
        _context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Count; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        var result = new List<int>();
        for (int pos = prompt.Count; result.Count < n; pos++)
        {
            Check(_context.Decode(batch));
            int next = ArgMax(_context.NativeHandle.GetLogitsIth(batch.TokenCount - 1));
            result.Add(next);
            batch.Clear();
            batch.Add((LLamaToken)next, pos, LLamaSeqId.Zero, true);
        }
        return [.. result];
    }

    static void Check(DecodeResult r)
    {
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode: {r}");
    }

    static int ArgMax(Span<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
