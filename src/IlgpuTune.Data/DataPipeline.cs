using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data;

/// <summary>
/// What the data pipeline needs to turn dataset files into training rows. The CLI fills it from options; a training
/// config supplies the same values.
/// </summary>
public sealed record DataOptions
{
    /// <summary>.json, .jsonl or .parquet files, read in this order.</summary>
    public required IReadOnlyList<string> DataFiles { get; init; }
    /// <summary>A dataset map fn name (DatasetMapFns.Parse): conversation, alpaca, oasst1, colors, openai, text.</summary>
    public required string Format { get; init; }
    /// <summary>The tokenizer folder (its files key the cache).</summary>
    public required string TokenizerDir { get; init; }
    /// <summary>
    /// An XTuner PROMPT_TEMPLATE name, "auto" for the tokenizer's own chat_template (or the name of one of its named
    /// chat templates), or "none" for no template_map_fn (incremental pre-training).
    /// </summary>
    public required string Template { get; init; }
    public required int MaxLength { get; init; }
    /// <summary>pack_to_max_length: several samples per row (never split); false = one sample per row.</summary>
    public bool Pack { get; init; } = true;
    public bool ShuffleBeforePack { get; init; } = true;
    public ulong Seed { get; init; }
    public int MaxErrors { get; init; } = DatasetReader.DefaultMaxErrors;
}

/// <summary>read → map → template → encode (all cores) → pack → memory-mapped cache.</summary>
public static class DataPipeline
{
    /// <summary>
    /// Every conversation of every data file; the bad records of all files are reported together in one
    /// <see cref="DatasetException"/> (up to MaxErrors). Dropped = records XTuner's map fn drops (alpaca &lt;nooutput&gt;).
    /// </summary>
    public static (List<Conversation> Conversations, int Dropped) Read(DataOptions o)
    {
        var format = DatasetMapFns.Parse(o.Format);
        var all = new List<Conversation>();
        var errors = new List<DatasetError>();
        bool more = false;
        int dropped = 0;
        foreach (string f in o.DataFiles)
        {
            try
            {
                var (c, d) = DatasetReader.Read(f, format, o.MaxErrors);
                all.AddRange(c);
                dropped += d;
            }
            catch (DatasetException e)
            {
                errors.AddRange(e.Errors);
                more |= e.Message.Contains("(more errors omitted)", StringComparison.Ordinal);
            }
        }
        if (errors.Count > 0) throw new DatasetException(errors.Take(o.MaxErrors).ToList(), more || errors.Count > o.MaxErrors);
        return (all, dropped);
    }

    /// <summary>XTuner's encode_fn for an XTuner template or none; the chat-template encoder for auto or a named chat template.</summary>
    public static ISampleEncoder CreateEncoder(DataOptions o, ITokenizer tokenizer)
    {
        if (o.Template is "none" or "") return new XtunerEncoder(tokenizer, null, o.MaxLength);
        if (XtunerTemplates.Prompt.ContainsKey(o.Template)) return new XtunerEncoder(tokenizer, XtunerTemplates.Get(o.Template), o.MaxLength);
        if (o.Template == "auto" && tokenizer.Config.ChatTemplate is null)
            throw new KeyNotFoundException($"{o.TokenizerDir} has no chat_template (tokenizer_config.json or chat_template.jinja); pass an XTuner prompt template");
        string source = ChatTemplates.Resolve(o.Template, tokenizer.Config) ?? throw new KeyNotFoundException(
            $"template '{o.Template}' is neither an XTuner prompt template ({string.Join(", ", XtunerTemplates.Prompt.Keys)}) nor a chat template of {o.TokenizerDir}");
        return new ChatTemplateEncoder(tokenizer, source, o.MaxLength);
    }

    /// <summary>
    /// Encodes every conversation in parallel (all cores unless limited); results are in input order. Records the encoder
    /// rejects are reported together, in record order, in one <see cref="DatasetException"/>.
    /// </summary>
    public static EncodedSample[] EncodeAll(IReadOnlyList<Conversation> conversations, ISampleEncoder encoder, int maxDegreeOfParallelism = -1,
        int maxErrors = DatasetReader.DefaultMaxErrors)
    {
        var outp = new EncodedSample[conversations.Count];
        var errors = new DatasetError[]?[conversations.Count];
        Parallel.For(0, conversations.Count, new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism }, i =>
        {
            try
            {
                outp[i] = encoder.Encode(conversations[i]);
            }
            catch (DatasetException e)
            {
                errors[i] = [.. e.Errors];
            }
        });
        var all = errors.Where(e => e is not null).SelectMany(e => e!).ToList();
        if (all.Count > 0) throw new DatasetException(all.Take(maxErrors).ToList(), all.Count > maxErrors);
        return outp;
    }

    /// <summary>Packed rows (options.Pack) or one row per sample in order; samples without loss are dropped either way.</summary>
    public static (List<PackedRow> Rows, PackStats Stats) Pack(IReadOnlyList<EncodedSample> samples, DataOptions o)
    {
        if (o.Pack) return Packer.Pack(samples, o.MaxLength, o.ShuffleBeforePack, o.Seed);
        var rows = new List<PackedRow>();
        int noLoss = 0, truncated = 0;
        long tokens = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var s = samples[i];
            if (s.Truncated) truncated++;
            if (!s.HasLoss) { noLoss++; continue; }
            rows.Add(new PackedRow(s.InputIds, s.Labels, [0, s.InputIds.Length], Enumerable.Range(0, s.InputIds.Length).ToArray(), [i]));
            tokens += s.InputIds.Length;
        }
        return (rows, new PackStats(rows.Count, rows.Count, noLoss, truncated, tokens, o.MaxLength));
    }

    public static string CacheKey(DataOptions o) =>
        PackedCache.Key(o.DataFiles, Tokenizers.Files(o.TokenizerDir), o.Template, DatasetMapFns.Parse(o.Format).ToString(),
            o.MaxLength, o.ShuffleBeforePack, o.Seed, o.Pack);

    /// <summary>
    /// The training rows for <paramref name="o"/>: opened from <paramref name="cacheDir"/> when a cache with the same key
    /// (data files' contents, tokenizer files, template, format, max_length, packing options) exists, else read, encoded
    /// on all cores, packed and written atomically. <paramref name="tokenizer"/> must be the one in o.TokenizerDir.
    /// </summary>
    public static PackedCache Prepare(DataOptions o, ITokenizer tokenizer, string cacheDir)
    {
        string key = CacheKey(o);
        if (PackedCache.TryOpen(cacheDir, key) is { } cached) return cached;
        var (conversations, _) = Read(o);
        var samples = EncodeAll(conversations, CreateEncoder(o, tokenizer));
        var (rows, stats) = Pack(samples, o);
        return PackedCache.Write(cacheDir, key, rows, stats);
    }
}
