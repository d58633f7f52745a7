using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
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
    /// <summary>Dataset files (.json, .jsonl, .parquet, .csv, .tsv, .xlsx, .txt) or HF dataset folders, read in this order.</summary>
    public required IReadOnlyList<string> DataFiles { get; init; }
    /// <summary>Field → column renames applied before the map fn (dataset_columns), e.g. {input: question, output: answer}.</summary>
    public IReadOnlyDictionary<string, string>? Columns { get; init; }
    /// <summary>How .txt files are cut into samples (text_sample_by): line, paragraph (blank-line separated) or document.</summary>
    public TextSampleBy TextSampleBy { get; init; } = TextSampleBy.Line;
    /// <summary>A dataset map fn name (DatasetMapFns.Parse): conversation, alpaca, oasst1, colors, openai, text, default, ...</summary>
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
    /// <summary>The tokenized-dataset cache folder (dataset_cache_dir); null = <see cref="DataPipeline.DefaultCacheDir"/>.</summary>
    public string? CacheDir { get; init; }
}

/// <summary>
/// A dataset read and encoded (<see cref="DataPipeline.ReadAndEncode"/>): samples in record order, the mapped records when
/// kept, and how many records the map fn dropped.
/// </summary>
public sealed record EncodedDataset(EncodedSample[] Samples, List<Conversation>? Conversations, int Dropped);

/// <summary>
/// What check-dataset and train say about a dataset beyond counts: inputs / outputs left empty by the map fn (a wrong
/// format or column names), and samples that lost every supervised token to truncation, with the reason.
/// </summary>
public sealed record DatasetDiagnosis(DatasetFormat Format, int Samples, int Trainable, int EmptyInputs, string? FirstEmptyInput, int EmptyOutputs,
    string? FirstEmptyOutput, int DroppedByTruncation, string? TruncationReason, int NoLossNotTruncated)
{
    /// <summary>One line per problem found (none for a healthy dataset).</summary>
    public IEnumerable<string> Warnings()
    {
        if (EmptyInputs > 0)
            yield return $"{EmptyInputs} of {Samples} samples have an empty input after the map fn (first: {FirstEmptyInput}): " +
                (Format == DatasetFormat.Colors ? "colors_map_fn keeps the text after ':' of description; write \"Name: description\""
                    : "check dataset_map_fn and the column names");
        if (EmptyOutputs > 0)
            yield return $"{EmptyOutputs} of {Samples} samples have an empty output after the map fn (first: {FirstEmptyOutput})";
        if (DroppedByTruncation > 0)
            yield return $"{DroppedByTruncation} of {Samples} samples dropped by truncation: {TruncationReason}";
        if (NoLossNotTruncated > 0)
            yield return $"{NoLossNotTruncated} of {Samples} samples have no supervised token (every output has output_with_loss false or loss false)";
    }

    /// <summary>Why no sample is trainable (for the error when Trainable is 0).</summary>
    public string NoTrainableReason() =>
        Samples == 0 ? "the dataset has no records"
        : DroppedByTruncation > 0 ? $"every sample lost its answer to truncation: {TruncationReason}"
        : NoLossNotTruncated > 0 ? "no sample has a supervised token (every output has output_with_loss false or loss false)"
        : "every label is -100";
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
        var errors = new List<DatasetError>();
        var counts = new ReadCounts();
        var all = Stream(o, errors, counts, out var more).ToList();
        if (errors.Count > 0) throw ReadErrors(o, errors, more);
        return (all, counts.Dropped);
    }

    /// <summary>
    /// The conversations of every data file as they are read; each file's bad records (up to MaxErrors a file, or the one
    /// error of a file in another format) go to <paramref name="errors"/>, and more.Value says some were left out.
    /// </summary>
    static IEnumerable<Conversation> Stream(DataOptions o, List<DatasetError> errors, ReadCounts counts, out StrongBox<bool> more)
    {
        var format = DatasetMapFns.Parse(o.Format);
        var readOptions = new DatasetReadOptions { Columns = o.Columns, SampleBy = o.TextSampleBy };
        more = new StrongBox<bool>();
        return Files(DatasetFiles.Expand(o.DataFiles), more);

        IEnumerable<Conversation> Files(List<string> files, StrongBox<bool> more)
        {
            foreach (string f in files)
            {
                var fileErrors = new List<DatasetError>();
                using var e = DatasetReader.Stream(f, format, o.MaxErrors, readOptions, fileErrors, counts).GetEnumerator();
                while (true)
                {
                    try
                    {
                        if (!e.MoveNext()) break;
                    }
                    catch (DatasetException x)
                    {
                        // A file in another format: its one line replaces the errors of its first record.
                        fileErrors.Clear();
                        fileErrors.AddRange(x.Errors);
                        break;
                    }
                    yield return e.Current;
                }
                more.Value |= fileErrors.Count > o.MaxErrors;
                errors.AddRange(fileErrors.Take(o.MaxErrors));
            }
        }
    }

    static DatasetException ReadErrors(DataOptions o, List<DatasetError> errors, StrongBox<bool> more) =>
        new(errors.Take(o.MaxErrors).ToList(), more.Value || errors.Count > o.MaxErrors);

    /// <summary>
    /// Reads the data files as a stream and encodes their conversations on all cores while reading (one reader, the other
    /// cores encoding batches), samples in record order. Read errors are reported before encode errors, as by
    /// <see cref="Read"/> then <see cref="EncodeAll"/>; keepConversations keeps the mapped records (check-dataset's
    /// diagnosis, log-dataset's sources), else each is let go once encoded.
    /// </summary>
    public static EncodedDataset ReadAndEncode(DataOptions o, ISampleEncoder encoder, PrepareProgress? progress = null,
        bool keepConversations = false, int maxDegreeOfParallelism = -1)
    {
        const int BatchSize = 64;
        var files = DatasetFiles.Expand(o.DataFiles);
        var errors = new List<DatasetError>();
        var counts = new ReadCounts();
        progress?.Reading(counts.Bytes, files.Where(File.Exists).Sum(f => new FileInfo(f).Length));
        var kept = keepConversations ? new List<Conversation>() : null;
        int workers = maxDegreeOfParallelism > 0 ? maxDegreeOfParallelism : Environment.ProcessorCount;
        var results = new ConcurrentDictionary<int, EncodedSample[]>();
        var encodeErrors = new ConcurrentDictionary<int, DatasetError[]>();   // by record index
        using var queue = new BlockingCollection<(int Index, Conversation[] Items)>(workers * 4);
        using var stop = new CancellationTokenSource();
        Exception? failed = null;
        var threads = Enumerable.Range(0, workers).Select(_ => new Thread(() =>
        {
            try
            {
                foreach (var (index, items) in queue.GetConsumingEnumerable(stop.Token))
                {
                    var outp = new EncodedSample[items.Length];
                    for (int i = 0; i < items.Length; i++)
                    {
                        try
                        {
                            outp[i] = encoder.Encode(items[i]);
                        }
                        catch (DatasetException e)
                        {
                            encodeErrors[index * BatchSize + i] = [.. e.Errors];
                        }
                    }
                    results[index] = outp;
                    progress?.AddSamples(items.Length);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref failed, e, null);
                stop.Cancel();
            }
        }) { IsBackground = true, Name = "dataset encode" }).ToList();
        threads.ForEach(t => t.Start());
        int batches = 0;
        StrongBox<bool> more;
        try
        {
            var batch = new List<Conversation>(BatchSize);
            foreach (var c in Stream(o, errors, counts, out more))
            {
                kept?.Add(c);
                batch.Add(c);
                if (batch.Count == BatchSize)
                {
                    queue.Add((batches++, [.. batch]), stop.Token);
                    batch.Clear();
                }
            }
            if (batch.Count > 0) queue.Add((batches++, [.. batch]), stop.Token);
            queue.CompleteAdding();
        }
        catch (OperationCanceledException) when (failed is not null)
        {
            more = new StrongBox<bool>();
        }
        catch
        {
            stop.Cancel();
            threads.ForEach(t => t.Join());
            throw;
        }
        threads.ForEach(t => t.Join());
        if (failed is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed);
        if (errors.Count > 0) throw ReadErrors(o, errors, more);
        if (!encodeErrors.IsEmpty)
        {
            var all = encodeErrors.OrderBy(kv => kv.Key).SelectMany(kv => kv.Value).ToList();
            throw new DatasetException(all.Take(o.MaxErrors).ToList(), all.Count > o.MaxErrors);
        }
        var samples = new EncodedSample[batches == 0 ? 0 : (batches - 1) * BatchSize + results[batches - 1].Length];
        for (int b = 0; b < batches; b++) results[b].CopyTo(samples, b * BatchSize);
        return new EncodedDataset(samples, kept, counts.Dropped);
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
        var (rows, stats) = Plan(samples, o);
        return ([.. rows], stats);
    }

    /// <summary>
    /// The rows of <see cref="Pack"/> as a plan: each row's arrays are built when read (no token held twice), so a cache
    /// is written straight from the samples.
    /// </summary>
    public static (PlannedRows Rows, PackStats Stats) Plan(IReadOnlyList<EncodedSample> samples, DataOptions o)
    {
        if (o.Pack)
        {
            var (members, packed) = Packer.Plan(samples, o.MaxLength, o.ShuffleBeforePack, o.Seed);
            return (new PlannedRows(samples, members, packed: true), packed);
        }
        var single = new List<int[]>();
        int noLoss = 0, truncated = 0;
        long tokens = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var s = samples[i];
            if (s.Truncated) truncated++;
            if (!s.HasLoss) { noLoss++; continue; }
            single.Add([i]);
            tokens += s.InputIds.Length;
        }
        return (new PlannedRows(samples, single, packed: false), new PackStats(single.Count, single.Count, noLoss, truncated, tokens, o.MaxLength));
    }

    /// <summary>
    /// Empty inputs / outputs after the map fn, and for the samples truncation left without a supervised token, why:
    /// their prompts' lengths (re-encoded without the limit) and the prompt template's system part against max_length.
    /// </summary>
    public static DatasetDiagnosis Diagnose(DataOptions o, ITokenizer tokenizer, IReadOnlyList<Conversation> conversations,
        IReadOnlyList<EncodedSample> samples)
    {
        var format = DatasetMapFns.Parse(o.Format);
        int emptyIn = 0, emptyOut = 0;
        string? firstIn = null, firstOut = null;
        foreach (var c in conversations)
        {
            // Pre-training text has no input by design.
            if (format != DatasetFormat.Text && o.Template is not ("none" or "") && c.Turns.Any(t => string.IsNullOrWhiteSpace(t.Input)))
            {
                emptyIn++;
                firstIn ??= c.Source;
            }
            if (c.Turns.Any(t => string.IsNullOrWhiteSpace(t.Output)))
            {
                emptyOut++;
                firstOut ??= c.Source;
            }
        }
        var truncatedAway = Enumerable.Range(0, samples.Count).Where(i => samples[i].Truncated && !samples[i].HasLoss).ToList();
        int noLoss = samples.Count(s => !s.Truncated && !s.HasLoss);
        string? reason = null;
        if (truncatedAway.Count > 0)
        {
            var full = CreateEncoder(o with { MaxLength = int.MaxValue / 2 }, tokenizer);
            var prompts = truncatedAway.Take(1000).Select(i =>
            {
                var labels = full.Encode(conversations[i]).Labels;
                int first = Array.FindIndex(labels, l => l >= 0);
                return first < 0 ? labels.Length : first;
            }).Order().ToArray();
            string? system = truncatedAway.Select(i => conversations[i].Turns[0].System).FirstOrDefault(st => !string.IsNullOrEmpty(st));
            int systemTokens = system is not null && XtunerTemplates.Prompt.TryGetValue(o.Template, out var t) && t.System is not null
                ? tokenizer.Encode(XtunerTemplates.Format(t.System, ("system", system))).Length : 0;
            string span = prompts[0] == prompts[^1] ? $"{prompts[0]} tokens" : $"{prompts[0]}-{prompts[^1]} tokens";
            reason = systemTokens * 2 >= o.MaxLength
                ? $"system prompt of {o.Template} is {systemTokens} tokens; max_length {o.MaxLength} leaves no room for the answer (prompts of {span}); raise max_length or shorten the system"
                : $"prompts of {span} before the first answer token; max_length {o.MaxLength} leaves no room for the answer; raise max_length or shorten the inputs";
        }
        return new DatasetDiagnosis(format, samples.Count, samples.Count(s => s.HasLoss), emptyIn, firstIn, emptyOut, firstOut,
            truncatedAway.Count, reason, noLoss);
    }

    /// <summary>The diagnosis of o's dataset read and encoded afresh (for the error when a run has no trainable sample).</summary>
    public static DatasetDiagnosis Diagnose(DataOptions o, ITokenizer tokenizer)
    {
        var (conversations, _) = Read(o);
        return Diagnose(o, tokenizer, conversations, EncodeAll(conversations, CreateEncoder(o, tokenizer)));
    }

    /// <summary>
    /// Stores rows already encoded (check-dataset's) in o's cache unless it holds them, so a later train opens them;
    /// returns the cache file's path.
    /// </summary>
    public static string StoreInCache(DataOptions o, IReadOnlyList<EncodedSample> samples)
    {
        string dir = o.CacheDir ?? DefaultCacheDir(), key = CacheKey(o, dir);
        var cached = PackedCache.TryOpen(dir, key);
        if (cached is null)
        {
            var (rows, stats) = Plan(samples, o);
            cached = PackedCache.Write(dir, key, rows, stats);
        }
        cached.Dispose();
        return PackedCache.PathFor(dir, key);
    }

    /// <summary>The cache key of o's rows; file hashes are remembered in cacheDir (null: o.CacheDir, else the default folder).</summary>
    public static string CacheKey(DataOptions o, string? cacheDir = null) =>
        PackedCache.Key(DatasetFiles.Expand(o.DataFiles), Tokenizers.Files(o.TokenizerDir), o.Template, DatasetMapFns.Parse(o.Format) +
            (o.Columns is { Count: > 0 } c ? "|columns " + string.Join(",", c.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}")) : "") +
            (o.TextSampleBy == TextSampleBy.Line ? "" : "|" + o.TextSampleBy),
            o.MaxLength, o.ShuffleBeforePack, o.Seed, o.Pack, cacheDir ?? o.CacheDir ?? DefaultCacheDir());

    /// <summary>Environment variable that moves the dataset cache (as HF_DATASETS_CACHE does for HF datasets).</summary>
    public const string CacheDirVariable = "ILGPU_TUNE_DATASETS_CACHE";

    /// <summary>
    /// The user-level dataset cache shared by train, check-dataset and every work dir: $ILGPU_TUNE_DATASETS_CACHE, else
    /// $XDG_CACHE_HOME/ilgpu-tune/datasets, else ~/.cache/ilgpu-tune/datasets. Entries are keyed by content, so one folder
    /// serves every experiment.
    /// </summary>
    public static string DefaultCacheDir()
    {
        if (Environment.GetEnvironmentVariable(CacheDirVariable) is { Length: > 0 } dir) return Path.GetFullPath(dir);
        string root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "ilgpu-tune", "datasets");
    }

    /// <summary>
    /// The training rows for <paramref name="o"/>: opened from <paramref name="cacheDir"/> (default
    /// <see cref="DefaultCacheDir"/>) when a cache with the same key (data files' contents, tokenizer files, template,
    /// format, max_length, packing options) exists, else read, encoded on all cores, packed and written atomically.
    /// <paramref name="tokenizer"/> must be the one in o.TokenizerDir.
    /// </summary>
    /// <param name="cacheDir">null: o.CacheDir, else <see cref="DefaultCacheDir"/>.</param>
    public static PackedCache Prepare(DataOptions o, ITokenizer tokenizer, string? cacheDir = null, PrepareProgress? progress = null)
    {
        cacheDir ??= o.CacheDir ?? DefaultCacheDir();
        string key = CacheKey(o, cacheDir);
        if (PackedCache.TryOpen(cacheDir, key) is { } cached) return cached;
        var samples = ReadAndEncode(o, CreateEncoder(o, tokenizer), progress).Samples;
        progress?.Phase("packing");
        var (rows, stats) = Plan(samples, o);
        progress?.Phase("writing the cache");
        return PackedCache.Write(cacheDir, key, rows, stats);
    }
}
