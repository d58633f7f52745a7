// Next-token choice with Hugging Face generate() semantics, on host logits[vocab]:
//   repetition penalty (every token already in the sequence, prompt included: logit / p if > 0, else logit * p), then
//   greedy argmax, or with sampling: temperature (logits / T), top-k (keep logits >= the k-th largest), top-p (drop the
//   smallest tokens whose cumulative probability stays <= 1 - p, always keeping the most likely), softmax, one draw.
// As XTuner's chat builds its GenerationConfig, temperature 0 means greedy (do_sample = temperature > 0).
namespace IlgpuTune.Model.Generation;

public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>0 = greedy; otherwise sample from softmax(logits / Temperature).</summary>
    public float Temperature { get; init; }
    /// <summary>0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>1 = off.</summary>
    public float TopP { get; init; } = 1f;
    /// <summary>1 = off.</summary>
    public float RepetitionPenalty { get; init; } = 1f;
    /// <summary>Generation stops after emitting one of these (config eos_token_id(s), the tokenizer's eos).</summary>
    public IReadOnlyCollection<int> EosTokenIds { get; init; } = [];
    /// <summary>Generation stops when the decoded answer ends with one of these (line breaks ignored, as XTuner's
    /// StopWordStoppingCriteria does); the stop word is not part of the answer.</summary>
    public IReadOnlyList<string> StopWords { get; init; } = [];

    public bool DoSample => Temperature > 0;

    public void Validate()
    {
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "max_new_tokens must be at least 1");
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "temperature must be finite and >= 0");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top_k must be >= 0");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top_p must be in (0, 1]");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty))
            throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "repetition_penalty must be finite and > 0");
        if (StopWords.Any(string.IsNullOrEmpty)) throw new ArgumentException("stop words must not be empty", nameof(StopWords));
    }
}

public static class Sampling
{
    /// <summary>The next token for <paramref name="logits"/> (modified in place) after the tokens <paramref name="seen"/>.</summary>
    public static int Next(Span<float> logits, IEnumerable<int> seen, GenerationOptions options, Random rng)
    {
        ApplyRepetitionPenalty(logits, seen, options.RepetitionPenalty);
        if (!options.DoSample) return Argmax(logits);
        ApplyTemperature(logits, options.Temperature);
        ApplyTopK(logits, options.TopK);
        ApplyTopP(logits, options.TopP);
        return Sample(logits, rng);
    }

    /// <summary>HF RepetitionPenaltyLogitsProcessor: each distinct seen token once.</summary>
    public static void ApplyRepetitionPenalty(Span<float> logits, IEnumerable<int> seen, float penalty)
    {
        if (penalty == 1f) return;
        var done = new HashSet<int>();
        foreach (int id in seen)
        {
            if ((uint)id >= (uint)logits.Length || !done.Add(id)) continue;
            logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
        }
    }

    public static void ApplyTemperature(Span<float> logits, float temperature)
    {
        if (temperature == 1f) return;
        for (int i = 0; i < logits.Length; i++) logits[i] /= temperature;
    }

    /// <summary>HF TopKLogitsWarper: logits below the k-th largest become -inf (ties with it stay).</summary>
    public static void ApplyTopK(Span<float> logits, int k)
    {
        if (k <= 0 || k >= logits.Length) return;
        // The k largest in a min-heap of size k: its root is the k-th largest.
        var heap = new PriorityQueue<float, float>(k);
        foreach (float x in logits)
        {
            if (heap.Count < k) heap.Enqueue(x, x);
            else if (x > heap.Peek()) heap.EnqueueDequeue(x, x);
        }
        float kth = heap.Peek();
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] < kth) logits[i] = float.NegativeInfinity;
    }

    /// <summary>HF TopPLogitsWarper (min_tokens_to_keep = 1).</summary>
    public static void ApplyTopP(Span<float> logits, float p)
    {
        if (p >= 1f) return;
        var order = new List<int>();
        for (int i = 0; i < logits.Length; i++)
            if (!float.IsNegativeInfinity(logits[i])) order.Add(i);
        if (order.Count <= 1) return;
        var l = logits.ToArray();
        order.Sort((a, b) => l[a] != l[b] ? l[a].CompareTo(l[b]) : b.CompareTo(a)); // ascending; the lower id counts as larger on ties
        double max = l[order[^1]], sum = 0;
        foreach (int i in order) sum += Math.Exp(l[i] - max);
        double cumulative = 0, threshold = 1.0 - p;
        for (int r = 0; r < order.Count - 1; r++)
        {
            cumulative += Math.Exp(l[order[r]] - max) / sum;
            if (cumulative > threshold) break;
            logits[order[r]] = float.NegativeInfinity;
        }
    }

    /// <summary>First index of the largest logit (torch.argmax).</summary>
    public static int Argmax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("no logits", nameof(logits));
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best] || float.IsNaN(logits[best])) best = i;
        return best;
    }

    /// <summary>One draw from softmax(<paramref name="logits"/>) (-inf = excluded), in double.</summary>
    public static int Sample(ReadOnlySpan<float> logits, Random rng)
    {
        int best = Argmax(logits);
        double max = logits[best];
        if (double.IsNaN(max) || double.IsNegativeInfinity(max)) throw new InvalidOperationException("no token is left to sample (all logits are -inf or NaN)");
        double sum = 0;
        foreach (float x in logits) sum += Math.Exp(x - max);
        double u = rng.NextDouble() * sum, acc = 0;
        int last = best;
        for (int i = 0; i < logits.Length; i++)
        {
            double e = Math.Exp(logits[i] - max);
            if (e == 0) continue;
            acc += e;
            last = i;
            if (u < acc) return i;
        }
        return last; // rounding left u at the very top
    }
}
