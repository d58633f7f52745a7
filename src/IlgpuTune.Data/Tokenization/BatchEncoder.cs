namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// Encodes many texts over all cores with results in input order (HF's encode_batch): the inputs are cut into chunks of
/// roughly equal character count, each worker encodes whole chunks into its own reused buffer.
/// </summary>
public static class BatchEncoder
{
    // texts: N strings -> N id arrays, result[i] = tokenizer.Encode(texts[i], addSpecialTokens)
    public static int[][] EncodeBatch(this ITokenizer tokenizer, IReadOnlyList<string> texts, bool addSpecialTokens = false,
        int maxDegreeOfParallelism = -1)
    {
        var result = new int[texts.Count][];
        if (texts.Count == 0) return result;
        long total = 0;
        foreach (var t in texts) total += t.Length;
        int workers = maxDegreeOfParallelism > 0 ? maxDegreeOfParallelism : Environment.ProcessorCount;
        // ~8 chunks per worker balances uneven texts; a chunk is never smaller than 16 KiB chars (scheduling cost).
        long target = Math.Max(16 * 1024, total / Math.Max(1, workers * 8));
        var starts = new List<int> { 0 };
        long acc = 0;
        for (int i = 0; i < texts.Count; i++)
        {
            acc += texts[i].Length;
            if (acc >= target && i + 1 < texts.Count)
            {
                starts.Add(i + 1);
                acc = 0;
            }
        }
        starts.Add(texts.Count);
        Parallel.For(0, starts.Count - 1, new ParallelOptions { MaxDegreeOfParallelism = workers }, () => new List<int>(4096), (c, _, buf) =>
        {
            for (int i = starts[c]; i < starts[c + 1]; i++)
            {
                if (addSpecialTokens)
                {
                    result[i] = tokenizer.Encode(texts[i], true);
                    continue;
                }
                buf.Clear();
                tokenizer.EncodeTo(texts[i], buf);
                result[i] = [.. buf];
            }
            return buf;
        }, _ => { });
        return result;
    }
}
