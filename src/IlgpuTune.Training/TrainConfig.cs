// A training run's configuration: every XTuner knob under XTuner's own names, read from YAML. Unknown keys and values of
// the wrong type are errors naming the key (and its line); `--cfg-options key=value` overrides any key (dotted for nested:
// lora.r=16).
using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace IlgpuTune.Training;

public sealed class LoraSettings
{
    public int R { get; set; } = 64;
    public double LoraAlpha { get; set; } = 16;
    public double LoraDropout { get; set; } = 0.1;
    /// <summary>null = every linear layer except the output head (XTuner's find_all_linear_names).</summary>
    public List<string>? TargetModules { get; set; }
    public bool UseRslora { get; set; }
    /// <summary>Start from this PEFT adapter folder's A/B (and its r / alpha) instead of PEFT's fresh init.</summary>
    public string? InitAdapter { get; set; }
}

public sealed class TrainConfig
{
    public string Source { get; set; } = "";
    public string PretrainedModelNameOrPath { get; set; } = "";
    /// <summary>Folder with tokenizer.json (+ tokenizer_config.json); defaults to the model folder.</summary>
    public string? Tokenizer { get; set; }
    /// <summary>bfloat16 | float16 | float32: compute dtype; float16 turns on dynamic loss scaling.</summary>
    public string Dtype { get; set; } = "bfloat16";
    /// <summary>none | nf4.</summary>
    public string Quantization { get; set; } = "none";
    public bool GradientCheckpointing { get; set; } = true;
    /// <summary>Keep the layer inputs gradient checkpointing saves in page-locked host memory until their layer's backward.</summary>
    public bool OffloadCheckpoints { get; set; }
    /// <summary>Keep the frozen input embedding in host memory, uploading each batch's rows. null = auto: on for QLoRA on a GPU
    /// with an untied head.</summary>
    public bool? OffloadEmbeddings { get; set; }
    /// <summary>null = full fine-tuning.</summary>
    public LoraSettings? Lora { get; set; }
    public List<string> DataPath { get; set; } = [];
    public string DatasetMapFn { get; set; } = "conversation";
    /// <summary>Field → column renames before the map fn (spreadsheets), e.g. {input: question, output: answer}.</summary>
    public Dictionary<string, string>? DatasetColumns { get; set; }
    /// <summary>How .txt data files are cut into samples: line | paragraph (blank-line separated) | document.</summary>
    public string TextSampleBy { get; set; } = "line";
    public string PromptTemplate { get; set; } = "default";
    public string? System { get; set; }
    public string? SystemTemplate { get; set; }
    public int MaxLength { get; set; } = 2048;
    public bool PackToMaxLength { get; set; } = true;
    public bool ShuffleBeforePack { get; set; } = true;
    /// <summary>Where tokenized datasets are cached (null: ILGPU_TUNE_DATASETS_CACHE or ~/.cache/ilgpu-tune/datasets).</summary>
    public string? DatasetCacheDir { get; set; }
    public int BatchSize { get; set; } = 1;
    public int AccumulativeCounts { get; set; } = 16;
    public int MaxEpochs { get; set; } = 3;
    /// <summary>Stop after this many micro-batches (overrides max_epochs when set).</summary>
    public int? MaxIters { get; set; }
    public double Lr { get; set; } = 2e-4;
    public List<double> Betas { get; set; } = [0.9, 0.999];
    public double WeightDecay { get; set; }
    public double MaxNorm { get; set; } = 1;
    public double WarmupRatio { get; set; } = 0.03;
    /// <summary>Keep AdamW state in page-locked host memory, paged to the device around each update.</summary>
    public bool PagedOptimizer { get; set; }
    public int SaveSteps { get; set; } = 500;
    public int SaveTotalLimit { get; set; } = 2;
    public int EvaluationFreq { get; set; } = 500;
    public List<string> EvaluationInputs { get; set; } = [];
    public int EvaluationMaxNewTokens { get; set; } = 64;
    public int LoggingSteps { get; set; } = 10;
    /// <summary>Stop the run after this many optimizer steps in a row skipped for a non-finite loss or gradient (or with a
    /// gradient norm of exactly 0: diverged).</summary>
    public int MaxSkippedSteps { get; set; } = 10;
    public int Seed { get; set; } = 42;
    public string? WorkDir { get; set; }
    /// <summary>cuda | cpu | ilgpu-cpu | auto.</summary>
    public string? Device { get; set; }
    /// <summary>Write each micro-batch's input ids, labels and position ids to the launch folder work_dir/YYYYmmdd_HHMMSS/batches.jsonl (to replay a run elsewhere).</summary>
    public bool DumpBatches { get; set; }
    /// <summary>none (SFT) | dpo | orpo | reward: train on preference pairs (XTuner's model type DPO / ORPO / RewardModel).</summary>
    public string Preference { get; set; } = "none";
    /// <summary>DPO / ORPO β (XTuner model.beta).</summary>
    public double Beta { get; set; } = 0.1;
    /// <summary>XTuner model.loss_type; DPO: sigmoid (default) | robust | hinge | ipo | kto_pair | sppo_hard | nca_pair; reward:
    /// ranking (default) | focal.</summary>
    public string? LossType { get; set; }
    /// <summary>Reward model: the token appended to every sequence whose hidden state is scored (XTuner reward_token_id);
    /// null: the tokenizer's &lt;|reward|&gt; token.</summary>
    public int? RewardTokenId { get; set; }
    /// <summary>Reward model score penalty: log_barrier (default) | L2 | none, weighted by penalty_weight (0.01).</summary>
    public string PenaltyType { get; set; } = "log_barrier";
    public double PenaltyWeight { get; set; } = 0.01;
    /// <summary>DPO sigmoid / robust label smoothing (XTuner model.label_smoothing), in [0, 0.5).</summary>
    public double LabelSmoothing { get; set; }
    /// <summary>What reading the config decided that the user should hear (e.g. how an XTuner .py setting is honoured); not a key.</summary>
    public List<string> Notes { get; } = [];

    // ---- reading ----

    private sealed record Key(string Name, Action<TrainConfig, YamlNode, string> Set);

    private static readonly Key[] s_keys =
    [
        new("pretrained_model_name_or_path", (c, n, w) => c.PretrainedModelNameOrPath = Str(n, w)),
        new("tokenizer", (c, n, w) => c.Tokenizer = NullableStr(n, w)),
        new("dtype", (c, n, w) => c.Dtype = OneOf(n, w, "bfloat16", "float16", "float32")),
        new("quantization", (c, n, w) => c.Quantization = OneOf(n, w, "none", "nf4")),
        new("gradient_checkpointing", (c, n, w) => c.GradientCheckpointing = Bool(n, w)),
        new("offload_checkpoints", (c, n, w) => c.OffloadCheckpoints = Bool(n, w)),
        new("offload_embeddings", (c, n, w) => c.OffloadEmbeddings = IsNull(n) ? null : Bool(n, w)),
        new("lora", (c, n, w) => c.Lora = IsNull(n) ? null : ReadLora(n, w, c.Lora ?? new LoraSettings())),
        new("data_path", (c, n, w) => c.DataPath = StrList(n, w)),
        // null is XTuner's dataset_map_fn=None (records already in its conversation format) and template_map_fn=None.
        new("dataset_map_fn", (c, n, w) => c.DatasetMapFn = IsNull(n) ? "conversation" : Str(n, w)),
        new("dataset_columns", (c, n, w) => c.DatasetColumns = IsNull(n) ? null : StrMap(n, w)),
        new("text_sample_by", (c, n, w) => c.TextSampleBy = OneOf(n, w, "line", "paragraph", "document")),
        new("prompt_template", (c, n, w) => c.PromptTemplate = IsNull(n) ? "none" : Str(n, w)),
        new("system", (c, n, w) => c.System = NullableStr(n, w)),
        new("system_template", (c, n, w) => c.SystemTemplate = NullableStr(n, w)),
        new("max_length", (c, n, w) => c.MaxLength = Int(n, w, min: 2)),
        new("pack_to_max_length", (c, n, w) => c.PackToMaxLength = Bool(n, w)),
        new("shuffle_before_pack", (c, n, w) => c.ShuffleBeforePack = Bool(n, w)),
        new("dataset_cache_dir", (c, n, w) => c.DatasetCacheDir = NullableStr(n, w)),
        new("batch_size", (c, n, w) => c.BatchSize = Int(n, w, min: 1)),
        new("accumulative_counts", (c, n, w) => c.AccumulativeCounts = Int(n, w, min: 1)),
        new("max_epochs", (c, n, w) => c.MaxEpochs = Int(n, w, min: 1)),
        new("max_iters", (c, n, w) => c.MaxIters = IsNull(n) ? null : Int(n, w, min: 1)),
        new("lr", (c, n, w) => c.Lr = Num(n, w, min: 0)),
        new("betas", (c, n, w) => c.Betas = ReadBetas(n, w)),
        new("weight_decay", (c, n, w) => c.WeightDecay = Num(n, w, min: 0)),
        new("max_norm", (c, n, w) => c.MaxNorm = Num(n, w, min: 0)),
        new("warmup_ratio", (c, n, w) => c.WarmupRatio = Num(n, w, min: 0, max: 1)),
        new("paged_optimizer", (c, n, w) => c.PagedOptimizer = Bool(n, w)),
        new("save_steps", (c, n, w) => c.SaveSteps = Int(n, w, min: 1)),
        new("save_total_limit", (c, n, w) => c.SaveTotalLimit = Int(n, w, min: -1)),
        new("evaluation_freq", (c, n, w) => c.EvaluationFreq = Int(n, w, min: 1)),
        new("evaluation_inputs", (c, n, w) => c.EvaluationInputs = StrList(n, w)),
        new("evaluation_max_new_tokens", (c, n, w) => c.EvaluationMaxNewTokens = Int(n, w, min: 1)),
        new("logging_steps", (c, n, w) => c.LoggingSteps = Int(n, w, min: 1)),
        new("max_skipped_steps", (c, n, w) => c.MaxSkippedSteps = Int(n, w, min: 1)),
        new("seed", (c, n, w) => c.Seed = Int(n, w, min: 0)),
        new("work_dir", (c, n, w) => c.WorkDir = NullableStr(n, w)),
        new("device", (c, n, w) => c.Device = IsNull(n) ? null : OneOf(n, w, "cuda", "cpu", "ilgpu-cpu", "driver", "auto")),
        new("dump_batches", (c, n, w) => c.DumpBatches = Bool(n, w)),
        new("preference", (c, n, w) => c.Preference = OneOf(n, w, "none", "dpo", "orpo", "reward")),
        new("reward_token_id", (c, n, w) => c.RewardTokenId = IsNull(n) ? null : Int(n, w, min: 0)),
        new("penalty_type", (c, n, w) => c.PenaltyType = OneOf(n, w, "log_barrier", "L2", "none")),
        new("penalty_weight", (c, n, w) => c.PenaltyWeight = Num(n, w, min: 0)),
        new("beta", (c, n, w) => c.Beta = Num(n, w, min: 1e-9)),
        new("loss_type", (c, n, w) => c.LossType = IsNull(n) ? null : OneOf(n, w, "sigmoid", "robust", "hinge", "ipo", "kto_pair", "sppo_hard", "nca_pair", "ranking", "focal")),
        new("label_smoothing", (c, n, w) => c.LabelSmoothing = Num(n, w, min: 0, max: 0.499999)),
    ];

    private static readonly string[] s_loraKeys = ["r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "init_adapter"];

    public static IReadOnlyList<string> KeyNames => s_keys.Select(k => k.Name).ToArray();

    /// <summary>Reads a YAML config file, then applies "key=value" overrides (values in YAML syntax).</summary>
    public static TrainConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        if (!File.Exists(path)) throw new ConfigException($"{path}: config file not found");
        return Parse(File.ReadAllText(path), path, overrides);
    }

    public static TrainConfig Parse(string yaml, string source, IEnumerable<string>? overrides = null)
    {
        var root = ReadYaml(yaml, source) as YamlMappingNode
            ?? throw new ConfigException($"{source}: expected a mapping of keys to values at the top level");
        return FromMapping(root, source, overrides, n => Where(source, n));
    }

    /// <summary>
    /// The config from keys already read into a mapping (YAML, or an XTuner .py config mapped to our keys); where(node)
    /// names the place a value came from for errors.
    /// </summary>
    internal static TrainConfig FromMapping(YamlMappingNode root, string source, IEnumerable<string>? overrides, Func<YamlNode, string> where)
    {
        var config = new TrainConfig { Source = source };
        foreach (var (keyNode, value) in root.Children)
            Apply(config, KeyName(keyNode, where), value, where(keyNode), where(value));
        // Overrides apply after the file, each error naming the option rather than a line of the file; a dotted key
        // becomes a nested mapping that merges into the section (lora.r=16 keeps the file's other lora keys).
        foreach (var o in overrides ?? [])
        {
            var (name, value) = ReadOverride(o);
            string at = $"--cfg-options '{o}'";
            Apply(config, name, value, at, at);
        }
        config.Validate();
        return config;
    }

    /// <summary>The keys a config cannot do without (also for configs built in code; errors name <see cref="Source"/>).</summary>
    public void Validate()
    {
        string source = Source.Length > 0 ? Source : "TrainConfig";
        if (string.IsNullOrWhiteSpace(PretrainedModelNameOrPath))
            throw new ConfigException($"{source}: key 'pretrained_model_name_or_path' is required");
        if (DataPath.Count == 0) throw new ConfigException($"{source}: key 'data_path' is required (a file or a list of files)");
        if (Quantization == "nf4" && Lora is null)
            throw new ConfigException($"{source}: quantization nf4 (QLoRA) needs a 'lora' section");
        if (OffloadCheckpoints && !GradientCheckpointing)
            throw new ConfigException($"{source}: key 'offload_checkpoints' is true but 'gradient_checkpointing' is false: only the layer " +
                "inputs that gradient checkpointing keeps are offloaded (turn gradient_checkpointing on, or drop offload_checkpoints)");
        if (OffloadEmbeddings == true && Lora is null)
            throw new ConfigException($"{source}: key 'offload_embeddings': full fine-tuning (no 'lora' section) trains the embedding, " +
                "so it stays on the device; remove the key or train LoRA");
    }

    private static void Apply(TrainConfig config, string name, YamlNode value, string keyWhere, string valueWhere)
    {
        var key = s_keys.FirstOrDefault(k => k.Name == name)
            ?? throw new ConfigException($"{keyWhere}: unknown key '{name}'{Suggest(name, KeyNames)}");
        key.Set(config, value, valueWhere + $": key '{name}'");
    }

    // Keys are plain names: a complex key ("? [a]") or a null key is refused at its position.
    private static string KeyName(YamlNode k, Func<YamlNode, string> where) => k is YamlScalarNode { Value: { Length: > 0 } name }
        ? name
        : throw new ConfigException($"{where(k)}:{k.Start.Column}: keys must be plain names, got {Show(k)}");

    private static YamlNode ReadYaml(string yaml, string source)
    {
        try
        {
            var stream = new YamlStream();
            stream.Load(new StringReader(yaml));
            return stream.Documents.Count == 0 ? new YamlMappingNode() : stream.Documents[0].RootNode;
        }
        catch (YamlException e)
        {
            var inner = e;
            while (inner.InnerException is YamlException deeper) inner = deeper;
            var (line, column) = Locate(yaml, inner);
            throw new ConfigException($"{source}:{line}:{column}: invalid YAML: {inner.InnerException?.Message ?? inner.Message}");
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            // Input ending inside an unclosed flow collection reaches the parser's end-of-stream state.
            throw new ConfigException($"{source}: invalid YAML: unexpected end of input (an unclosed '[', '{{' or quote?)");
        }
    }

    // YamlDotNet reports some errors at an empty mark (1:1): a tab used as indentation, an alias to an unknown anchor.
    // Those are found in the text; every other error keeps the parser's position.
    private static (long Line, long Column) Locate(string yaml, YamlException e)
    {
        if (e.Start.Index > 0 || e.End.Index > 0) return (e.Start.Line, e.Start.Column);
        string? needle = e is AnchorNotFoundException && e.Message.Split('\'') is { Length: >= 3 } parts ? "*" + parts[1] : null;
        var lines = yaml.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            int at = needle is not null ? lines[i].IndexOf(needle, StringComparison.Ordinal)
                : e.Message.Contains("tab", StringComparison.Ordinal) ? lines[i].IndexOf('\t') : -1;
            if (at >= 0) return (i + 1, at + 1);
        }
        return (e.Start.Line, e.Start.Column);
    }

    // "lora.r=16" -> ("lora", {r: 16}); values are YAML (numbers, lists, null), and text YAML cannot read as a value
    // (e.g. "@tiny") is taken as a plain string.
    private static (string Name, YamlNode Value) ReadOverride(string option)
    {
        int eq = option.IndexOf('=');
        if (eq <= 0) throw new ConfigException($"--cfg-options '{option}': expected key=value");
        var path = option[..eq].Trim().Split('.');
        if (path.Any(p => p.Length == 0)) throw new ConfigException($"--cfg-options '{option}': '{option[..eq]}' is not a key (dotted names, e.g. lora.r)");
        string text = option[(eq + 1)..];
        YamlNode value;
        try
        {
            value = ReadYaml(text, $"--cfg-options '{option}'");
        }
        catch (ConfigException)
        {
            value = new YamlScalarNode(text) { Style = ScalarStyle.DoubleQuoted };
        }
        for (int i = path.Length - 1; i > 0; i--)
            value = new YamlMappingNode { { new YamlScalarNode(path[i]), value } };
        return (path[0], value);
    }

    private static LoraSettings ReadLora(YamlNode n, string where, LoraSettings lora)
    {
        if (n is not YamlMappingNode map) throw new ConfigException($"{where}: expected a mapping ({string.Join(", ", s_loraKeys)})");
        foreach (var (k, v) in map.Children)
        {
            string name = k is YamlScalarNode { Value: { Length: > 0 } kn } ? kn
                : throw new ConfigException($"{where}: keys must be plain names, got {Show(k)}");
            string w = where + "." + name;
            switch (name)
            {
                case "r": lora.R = Int(v, w, min: 1); break;
                case "lora_alpha": lora.LoraAlpha = Num(v, w, min: 0); break;
                case "lora_dropout": lora.LoraDropout = Num(v, w, min: 0, max: 0.999); break;
                case "target_modules": lora.TargetModules = IsNull(v) ? null : StrList(v, w); break;
                case "use_rslora": lora.UseRslora = Bool(v, w); break;
                case "init_adapter": lora.InitAdapter = NullableStr(v, w); break;
                default: throw new ConfigException($"{where}: unknown key '{name}'{Suggest(name, s_loraKeys)}");
            }
        }
        return lora;
    }

    // ---- scalar readers: each error says where, which key, what it got and what it expected ----

    private static string Where(string source, YamlNode n) => n.Start.Line > 0 ? $"{source}:{n.Start.Line}" : source;

    private static bool IsNull(YamlNode n) => n is YamlScalarNode { Style: ScalarStyle.Plain } s && (s.Value is null or "" or "~" or "null");

    private static string Scalar(YamlNode n, string where, string expected) =>
        n is YamlScalarNode s && !IsNull(n) ? s.Value ?? "" : throw new ConfigException($"{where}: expected {expected}, got {Show(n)}");

    private static string Show(YamlNode n) => n is YamlScalarNode s ? (IsNull(n) ? "null" : $"'{s.Value}'") : n.NodeType.ToString().ToLowerInvariant();

    private static string Str(YamlNode n, string where) => Scalar(n, where, "a string");

    private static string? NullableStr(YamlNode n, string where) => IsNull(n) ? null : Str(n, where);

    private static string OneOf(YamlNode n, string where, params string[] allowed)
    {
        var s = Scalar(n, where, "one of " + string.Join(", ", allowed));
        return allowed.Contains(s) ? s : throw new ConfigException($"{where}: '{s}' is not one of {string.Join(", ", allowed)}");
    }

    private static bool Bool(YamlNode n, string where) => Scalar(n, where, "true or false").ToLowerInvariant() switch
    {
        "true" or "yes" => true,
        "false" or "no" => false,
        var s => throw new ConfigException($"{where}: expected true or false, got '{s}'"),
    };

    private static int Int(YamlNode n, string where, int min)
    {
        var s = Scalar(n, where, "an integer");
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
            throw new ConfigException($"{where}: expected an integer, got '{s}'");
        return v >= min ? v : throw new ConfigException($"{where}: {v} is below the minimum {min}");
    }

    private static double Num(YamlNode n, string where, double min, double max = double.MaxValue)
    {
        var s = Scalar(n, where, "a number");
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new ConfigException($"{where}: expected a number, got '{s}'");
        return v >= min && v <= max ? v : throw new ConfigException($"{where}: {s} is outside [{min}, {max}]");
    }

    private static Dictionary<string, string> StrMap(YamlNode n, string where) => n is YamlMappingNode map
        ? map.Children.ToDictionary(kv => Str(kv.Key, where), kv => Str(kv.Value, where + "." + Str(kv.Key, where)))
        : throw new ConfigException($"{where}: expected a mapping of field to column name, e.g. {{input: question, output: answer}}");

    private static List<string> StrList(YamlNode n, string where) => n switch
    {
        YamlSequenceNode seq => seq.Children.Select(c => Str(c, where)).ToList(),
        _ => [Str(n, where)],
    };

    private static List<double> ReadBetas(YamlNode n, string where)
    {
        var list = n is YamlSequenceNode seq ? seq.Children.Select(c => Num(c, where, 0, 0.999999)).ToList() : [];
        return list.Count == 2 ? list : throw new ConfigException($"{where}: expected two numbers in [0, 1), e.g. [0.9, 0.999]");
    }

    internal static string Suggest(string name, IEnumerable<string> valid)
    {
        var close = valid.OrderBy(v => Distance(name, v)).First();
        return Distance(name, close) <= 3 ? $" (did you mean '{close}'?)" : $" (known keys: {string.Join(", ", valid)})";
    }

    private static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
        return d[a.Length, b.Length];
    }
}

public sealed class ConfigException(string message) : Exception(message);
