using System.Text;
using System.Text.Json;
using Cocona;
using IlgpuTune.Data;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Packing;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Cli;

/// <summary>Dataset options shared by check-dataset and log-dataset (a training config will supply the same values).</summary>
public sealed record DatasetParameters(
    [Argument(Description = "training config (YAML file or built-in name); the options below override its values")] string? Config = null,
    [Option("data", Description = "dataset file (.json/.jsonl: JSON Lines or one JSON array; .parquet; .csv/.tsv; .xlsx; .txt) or HF dataset folder; repeat for several")] string[]? Data = null,
    [Option("format", Description = "the dataset map fn: preference (XTuner's prompt/chosen/rejected pairs), conversation (None), alpaca, openai, colors, oasst1, text (pretrain), default, arxiv, code_alpaca, ... (XTuner's *_map_fn names work too)")] string? Format = null,
    [Option("columns", Description = "rename columns to the fields the map fn reads, e.g. input=question,output=answer,system=persona")] string? Columns = null,
    [Option("text-sample-by", Description = ".txt samples: line (each non-blank line), paragraph (blank-line separated) or document (whole file)")] string? TextSampleBy = null,
    [Option("tokenizer", Description = "tokenizer folder (tokenizer.json or tokenizer.model, tokenizer_config.json)")] string? Tokenizer = null,
    [Option("template", Description = "XTuner prompt template name, auto (the model's chat_template), or none")] string? Template = null,
    [Option("max-length", Description = "max_length in tokens")] int? MaxLength = null,
    [Option("pack", Description = "pack_to_max_length")] bool? Pack = null,
    [Option("shuffle-before-pack", Description = "shuffle before packing (default true)")] bool? ShuffleBeforePack = null,
    [Option("seed", Description = "shuffle seed")] ulong? Seed = null) : ICommandParameterSet
{
    /// <summary>The config's data settings (as the trainer uses them), overridden by any option given.</summary>
    public DataOptions ToOptions()
    {
        var cfg = Config is null ? null : IlgpuTune.Training.Builtins.LoadConfig(Config);
        string Need(string? value, string option) =>
            value ?? throw new ArgumentException($"--{option} is required (or give a training config)");
        return new DataOptions
        {
            DataFiles = Data is { Length: > 0 } ? Data : cfg?.DataPath ?? throw new ArgumentException("--data is required (or give a training config)"),
            Format = Need(Format ?? cfg?.DatasetMapFn, "format"),
            Columns = Columns is not null ? DatasetReadOptions.ParseColumns(Columns) : cfg?.DatasetColumns,
            TextSampleBy = TextRecords.ParseSampleBy(TextSampleBy ?? cfg?.TextSampleBy ?? "line"),
            TokenizerDir = Need(Tokenizer ?? cfg?.Tokenizer ?? cfg?.PretrainedModelNameOrPath, "tokenizer"),
            Template = Need(Template ?? cfg?.PromptTemplate, "template"),
            MaxLength = MaxLength ?? cfg?.MaxLength ?? throw new ArgumentException("--max-length is required (or give a training config)"),
            Pack = Pack ?? cfg?.PackToMaxLength ?? false,
            ShuffleBeforePack = ShuffleBeforePack ?? cfg?.ShuffleBeforePack ?? true,
            Seed = Seed ?? (ulong)(cfg?.Seed ?? 0),
            CacheDir = cfg?.DatasetCacheDir,
        };
    }
}

[FriendlyErrors]
public sealed class DataCommands
{
    static readonly JsonSerializerOptions Compact = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    [Command("tokenize", Description = "Read a JSON array of strings on stdin, write a JSON array of id arrays on stdout")]
    public int Tokenize([Option("tokenizer", Description = "tokenizer folder")] string tokenizer,
        [Option("add-special-tokens", Description = "add BOS/EOS as the tokenizer's post-processor does")] bool addSpecialTokens = false)
    {
        var tok = Tokenizers.FromDirectory(tokenizer);
        string[] texts;
        try
        {
            texts = JsonSerializer.Deserialize<string[]>(Console.In.ReadToEnd()) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"stdin: expected a JSON array of strings ({e.Message})", e);
        }
        var ids = new int[texts.Length][];
        Parallel.For(0, texts.Length, i => ids[i] = tok.Encode(texts[i], addSpecialTokens));
        Console.Out.WriteLine(JsonSerializer.Serialize(ids));
        return 0;
    }

    [Command("render-template", Description = "Render a messages file with the model's chat_template (auto) or an XTuner prompt template")]
    public int RenderTemplate([Option("tokenizer", Description = "tokenizer folder")] string tokenizer,
        [Option("messages", Description = "JSON file: an array of {role, content}")] string messages,
        [Option("add-generation-prompt", Description = "end with the assistant prompt")] bool addGenerationPrompt = false,
        [Option("prompt-template", Description = "auto (the model's own chat_template), a named chat_template, or an XTuner template name")] string promptTemplate = "auto",
        [Option("template-kwargs", Description = "extra template variables as a JSON object, e.g. {\"enable_thinking\": false}")] string? templateKwargs = null)
    {
        var config = TokenizerConfig.Load(tokenizer);
        using var doc = CliPaths.ParseJson(File.ReadAllText(messages), messages);
        if (doc.RootElement.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{messages}: expected a JSON array of messages");
        if (ChatTemplates.Resolve(promptTemplate, config) is { } source)
        {
            Dictionary<string, object?>? kwargs = null;
            if (templateKwargs is not null)
            {
                using var kw = CliPaths.ParseJson(templateKwargs, "--template-kwargs");
                if (kw.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException("--template-kwargs: expected a JSON object");
                kwargs = kw.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone());
            }
            Console.Out.Write(ChatTemplates.Render(JinjaTemplate.Parse(source), doc.RootElement, config, addGenerationPrompt, kwargs));
            return 0;
        }
        if (promptTemplate == "auto")
            throw new InvalidDataException($"{tokenizer} has no chat_template; pass --prompt-template with an XTuner template name");
        Console.Out.Write(RenderXtuner(Tokenizers.FromDirectory(tokenizer), XtunerTemplates.Get(promptTemplate), doc.RootElement, addGenerationPrompt));
        return 0;
    }

    // The text XTuner's encode_fn tokenizes, piece by piece: [BOS] input output [EOS] SEP per turn (openai_map_fn turns).
    static string RenderXtuner(ITokenizer tok, PromptTemplate template, JsonElement messages, bool addGenerationPrompt)
    {
        var record = JsonDocument.Parse(JsonSerializer.Serialize(new { messages })).RootElement;
        var errors = new List<DatasetError>();
        var conv = DatasetMapFns.Map(new RawRecord(record, "messages"), DatasetFormat.OpenAI, errors);
        if (errors.Count > 0) throw new DatasetException(errors);
        var encoder = new XtunerEncoder(tok, template, int.MaxValue);
        var (bos, eos) = XtunerEncoder.BosEos(tok);
        var sb = new StringBuilder();
        bool needBos = true;
        int round = 0;
        if (conv is not null)
            foreach (var t in encoder.ApplyTemplate(conv))
            {
                if (needBos) sb.Append(tok.Decode(bos));
                sb.Append(t.Input).Append(t.Output);
                if (t.NeedEosToken) sb.Append(tok.Decode(eos));
                needBos = t.NeedEosToken;
                sb.Append(t.Sep);
                round++;
            }
        if (addGenerationPrompt)
        {
            // A trailing user message (openai_map_fn keeps only answered turns) becomes the next prompt.
            var list = messages.EnumerateArray().ToList();
            var tail = list.AsEnumerable().Reverse().TakeWhile(m => m.GetProperty("role").GetString() != "assistant").Reverse().ToList();
            string system = string.Concat(tail.Where(m => m.GetProperty("role").GetString() == "system").Select(m => m.GetProperty("content").GetString()));
            string input = string.Concat(tail.Where(m => m.GetProperty("role").GetString() == "user").Select(m => m.GetProperty("content").GetString()));
            if (needBos) sb.Append(tok.Decode(bos));
            if (system.Length > 0 && template.System is not null) sb.Append(XtunerTemplates.Format(template.System, ("system", system)));
            sb.Append(XtunerTemplates.Format(template.Instruction, ("input", input), ("round", (round + 1).ToString())));
        }
        return sb.ToString();
    }

    [Command("check-dataset", Description = "Validate every record, then print counts, the token-length histogram, empty fields and truncations; exit 2 when no sample is trainable")]
    public int CheckDataset(DatasetParameters p)
    {
        if (PreferenceDataCommands.Applies(p, out var rewardToken)) return PreferenceDataCommands.Check(p, rewardToken);
        var o = p.ToOptions();
        ITokenizer tok;
        List<Conversation> conversations;
        int dropped;
        EncodedSample[] samples;
        tok = Tokenizers.FromDirectory(o.TokenizerDir);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        EncodedDataset read;
        using (var progress = PrepareProgress.ToStderr())
            read = DataPipeline.ReadAndEncode(o, DataPipeline.CreateEncoder(o, tok), progress, keepConversations: true);
        (samples, conversations, dropped) = (read.Samples, read.Conversations!, read.Dropped);
        double encodeSeconds = sw.Elapsed.TotalSeconds;
        var (_, stats) = DataPipeline.Pack(samples, o);
        Console.WriteLine($"files: {string.Join(", ", o.DataFiles)}");
        Console.WriteLine($"records: {conversations.Count + dropped} ({dropped} dropped by the {o.Format} map fn), turns: {conversations.Sum(c => c.Turns.Count)}");
        Console.WriteLine($"samples: {samples.Length}, without any supervised token (dropped): {stats.DroppedNoLoss}, truncated to {o.MaxLength}: {stats.Truncated}");
        long tokens = samples.Sum(s => (long)s.InputIds.Length), supervised = samples.Sum(s => (long)s.Labels.Count(l => l >= 0));
        Console.WriteLine($"tokens: {tokens} ({supervised} supervised, {(tokens == 0 ? 0 : 100.0 * supervised / tokens):F1}%), read and encoded in {encodeSeconds:F2} s on {Environment.ProcessorCount} cores ({samples.Length / Math.Max(encodeSeconds, 1e-9):F0} samples/s)");
        if (samples.Length > 0)
        {
            var lengths = samples.Select(s => s.InputIds.Length).Order().ToArray();
            Console.WriteLine($"length: min {lengths[0]}, median {lengths[lengths.Length / 2]}, p95 {lengths[(int)(0.95 * (lengths.Length - 1))]}, max {lengths[^1]}");
            Console.Write(Histogram(lengths, o.MaxLength));
        }
        if (o.Pack) Console.WriteLine($"packed: {stats.Rows} rows of ≤ {o.MaxLength} tokens, fill ratio {stats.FillRatio:P1}");
        else Console.WriteLine($"rows: {stats.Rows} (one sample per row)");
        var diagnosis = DataPipeline.Diagnose(o, tok, conversations, samples);
        foreach (string w in diagnosis.Warnings()) Console.WriteLine($"warning: {w}");
        if (stats.Rows > 0) Console.WriteLine($"cache: {DataPipeline.StoreInCache(o, samples)}");
        if (diagnosis.Trainable == 0)
        {
            Console.Error.WriteLine($"error: no trainable sample: {diagnosis.NoTrainableReason()}");
            return 2;
        }
        return 0;
    }

    // Token-length histogram in 10 equal buckets up to max_length.
    static string Histogram(int[] lengths, int maxLength)
    {
        const int buckets = 10, width = 40;
        var counts = new int[buckets];
        foreach (int l in lengths) counts[Math.Min(buckets - 1, (int)((long)Math.Max(l - 1, 0) * buckets / maxLength))]++;
        int peak = Math.Max(1, counts.Max());
        var sb = new StringBuilder("token-length histogram:\n");
        for (int b = 0; b < buckets; b++)
        {
            long lo = (long)b * maxLength / buckets + 1, hi = (long)(b + 1) * maxLength / buckets;
            sb.Append($"  {lo,7}-{hi,-7} {new string('#', (int)Math.Ceiling((double)counts[b] * width / peak)),-width} {counts[b]}\n");
        }
        return sb.ToString();
    }

    [Command("log-dataset", Description = "Print the first samples as the trainer sees them")]
    public int LogDataset(DatasetParameters p,
        [Option("show", Description = "text, masked_text, input_ids, labels, position_ids or all")] string show = "all",
        [Option("count", Description = "how many samples (rows when packing)")] int count = 1)
    {
        string[] parts = show == "all" ? ["text", "masked_text", "input_ids", "labels"] : [show];
        if (parts.Any(s => s is not ("text" or "masked_text" or "input_ids" or "labels" or "position_ids")))
            throw new ArgumentException($"--show {show}: expected text, masked_text, input_ids, labels, position_ids or all");
        if (PreferenceDataCommands.Applies(p, out var rewardToken)) return PreferenceDataCommands.Log(p, rewardToken, parts, count, MaskedText);
        var o = p.ToOptions();
        ITokenizer tok;
        List<Conversation> conversations;
        EncodedSample[] samples;
        tok = Tokenizers.FromDirectory(o.TokenizerDir);
        EncodedDataset read;
        using (var progress = PrepareProgress.ToStderr())
            read = DataPipeline.ReadAndEncode(o, DataPipeline.CreateEncoder(o, tok), progress, keepConversations: true);
        (samples, conversations) = (read.Samples, read.Conversations!);
        var (rows, _) = DataPipeline.Pack(samples, o);
        foreach (var (row, k) in rows.Take(count).Select((r, k) => (r, k)))
        {
            string what = o.Pack ? $"row {k}: samples {string.Join(", ", row.SampleIndices.Select(i => conversations[i].Source))}" : $"sample {conversations[row.SampleIndices[0]].Source}";
            Console.WriteLine($"==================== {what}, {row.InputIds.Length} tokens ====================");
            foreach (var part in parts)
            {
                Console.WriteLine($"---------- {part} ----------");
                Console.WriteLine(part switch
                {
                    "text" => tok.Decode(row.InputIds),
                    "masked_text" => MaskedText(tok, row.Labels),
                    "input_ids" => JsonSerializer.Serialize(row.InputIds, Compact),
                    // Restart at 0 in each packed sample: the row's sample boundaries, e.g. for a peer replaying the rows.
                    "position_ids" => JsonSerializer.Serialize(row.PositionIds, Compact),
                    _ => JsonSerializer.Serialize(row.Labels, Compact),
                });
            }
        }
        return 0;
    }

    // Supervised runs decoded, ignored runs shown as [-100 × n].
    static string MaskedText(ITokenizer tok, int[] labels)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < labels.Length;)
        {
            int j = i;
            bool masked = labels[i] == EncodedSample.IgnoreIndex;
            while (j < labels.Length && (labels[j] == EncodedSample.IgnoreIndex) == masked) j++;
            sb.Append(masked ? $"[-100 × {j - i}]" : tok.Decode(labels[i..j]));
            i = j;
        }
        return sb.ToString();
    }
}
