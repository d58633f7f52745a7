// An XTuner v0.1 .py config as our TrainConfig. We read what XTuner's runner reads (model, train_dataloader, optim_wrapper,
// param_scheduler, train_cfg, default_hooks, custom_hooks, randomness, work_dir), not the settings variables above them,
// so a config whose PART 1 and PART 2-5 disagree trains as XTuner would. Settings that cannot change the numbers are
// accepted; one that would change training in a way we cannot honour is an error naming its line.
using System.Globalization;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;
using YamlDotNet.RepresentationModel;

namespace IlgpuTune.Training.Configs;

public static class XtunerPyConfig
{
    /// <summary>
    /// Reads CONFIG.py; overrides are XTuner's dotted keys into the config's dicts (train_dataloader.batch_size=2,
    /// optim_wrapper.optimizer.lr=1e-4) or our own keys (lr=1e-4, max_iters=10), ours applied after the mapping.
    /// </summary>
    public static TrainConfig Load(string path, IEnumerable<string>? overrides = null) => FromPy(PyConfig.Load(path), overrides);

    public static TrainConfig Parse(string text, string source, IEnumerable<string>? overrides = null) => FromPy(PyConfig.Parse(text, source), overrides);

    static TrainConfig FromPy(PyConfig py, IEnumerable<string>? overrides)
    {
        var ours = new List<string>();
        foreach (var o in overrides ?? [])
        {
            int eq = o.IndexOf('=');
            if (eq <= 0) throw new ConfigException($"--cfg-options '{o}': expected key=value");
            string first = o[..eq].Trim().Split('.')[0];
            if (TrainConfig.KeyNames.Contains(first)) ours.Add(o);
            else if (py.Globals.ContainsKey(first)) ApplyPyOverride(py, o[..eq].Trim(), o[(eq + 1)..]);
            else throw new ConfigException($"--cfg-options '{o[..eq]}': '{first}' is neither a variable of {py.Source} nor an ilgpu-tune key" +
                TrainConfig.Suggest(first, [.. py.Globals.Keys, .. TrainConfig.KeyNames]));
        }
        var m = new Mapper(py);
        m.Map();
        var cfg = TrainConfig.FromMapping(m.Root, py.Source, ours, n => m.Where.TryGetValue(n, out var w) ? w : "--cfg-options");
        cfg.Notes.AddRange(m.Notes);
        return cfg;
    }

    // mmengine's DictAction: numbers, True/False/None, [lists] / (tuples), quoted strings; anything else is a plain string.
    static void ApplyPyOverride(PyConfig py, string key, string text)
    {
        PyValue value;
        try
        {
            value = PyConfig.Parse("v = " + text, "--cfg-options").Globals["v"] with { Line = 0 };
        }
        catch (ConfigException)
        {
            // key=a,b and key=[a, 'b c'] are lists of unquoted or quoted items, as mmengine's DictAction reads them.
            string t = text.Trim();
            bool bracketed = t.Length >= 2 && (t[0], t[^1]) is ('[', ']') or ('(', ')');
            value = bracketed || t.Contains(',')
                ? new PyList((bracketed ? t[1..^1] : t).Split(',', StringSplitOptions.RemoveEmptyEntries).Select(x => Scalar(x.Trim().Trim('\'', '"'))).ToList(), t[0] == '(', 0)
                : Scalar(t);
        }
        var path = key.Split('.');
        // Config.fromfile gives every top-level name its own copy: setting train_dataset.x does not reach train_dataloader.dataset.
        var node = py.Globals[path[0]] = Clone(py.Globals[path[0]]);
        if (path.Length == 1) { py.Globals[path[0]] = value; return; }
        for (int i = 1; i < path.Length; i++)
        {
            bool last = i == path.Length - 1;
            switch (node)
            {
                case PyDict d:
                    if (last) { d.Items[path[i]] = value; return; }
                    node = d.Items.TryGetValue(path[i], out var child) ? child : d.Items[path[i]] = new PyDict(new(), 0);
                    break;
                case PyList l when int.TryParse(path[i], out int index) && index >= 0 && index < l.Items.Count:
                    if (last) { l.Items[index] = value; return; }
                    node = l.Items[index];
                    break;
                default:
                    throw new ConfigException($"--cfg-options '{key}': '{string.Join('.', path[..i])}' is {PyConfig.Repr(node)}, not a dict");
            }
        }
    }

    static PyValue Scalar(string text)
    {
        try
        {
            return PyConfig.Parse("v = " + text, "--cfg-options").Globals["v"] with { Line = 0 };
        }
        catch (ConfigException)
        {
            return text.ToLowerInvariant() switch { "true" => new PyBool(true, 0), "false" => new PyBool(false, 0), _ => new PyStr(text, 0) };
        }
    }

    static PyValue Clone(PyValue v) => v switch
    {
        PyDict d => new PyDict(new(d.Items.Select(kv => KeyValuePair.Create(kv.Key, Clone(kv.Value)))), d.Line),
        PyList l => new PyList(l.Items.Select(Clone).ToList(), l.IsTuple, l.Line),
        _ => v,
    };

    sealed class Mapper(PyConfig py)
    {
        public readonly YamlMappingNode Root = new();
        public readonly Dictionary<YamlNode, string> Where = new(ReferenceEqualityComparer.Instance);
        public readonly List<string> Notes = [];
        readonly string _dir = Path.GetDirectoryName(Path.GetFullPath(py.Source)) ?? ".";

        string At(PyValue v) => v.Line > 0 ? $"{py.Source}:{v.Line}" : "--cfg-options";
        ConfigException Err(PyValue v, string m) => new($"{At(v)}: {m}");

        PyValue? Global(string name) => py.Globals.TryGetValue(name, out var v) ? v : null;

        PyDict RequireDict(string name) => Global(name) switch
        {
            PyDict d => d,
            null => throw new ConfigException($"{py.Source}: '{name} = dict(...)' is missing (XTuner's runner needs it)"),
            var v => throw Err(v, $"{name}: expected dict(...), got {PyConfig.Repr(v)}"),
        };

        static string TypeOf(PyDict d) => d.Get("type") is PySymbol s ? s.Short : d.Get("type") is PyStr t ? t.Value : "";

        PyDict Typed(PyValue? v, string path, params string[] types)
        {
            if (v is not PyDict d) throw Err(v ?? new PyNone(0), $"{path}: expected dict(type={types[0]}, ...), got {(v is null ? "nothing" : PyConfig.Repr(v))}");
            string t = TypeOf(d);
            if (!types.Contains(t))
                throw Err(d, $"{path}: type {(t.Length == 0 ? "missing" : t)} is not supported here (expected {string.Join(" or ", types)})");
            return d;
        }

        // Every key of d must be known; `ignored` ones are accepted without effect.
        void Known(PyDict d, string path, params string[] keys)
        {
            foreach (var (k, v) in d.Items)
                if (k != "type" && !keys.Contains(k))
                    throw Err(v, $"{path}.{k}: not a setting ilgpu-tune can honour{TrainConfig.Suggest(k, keys)}");
        }

        void Set(string key, YamlNode node, PyValue from)
        {
            Root.Children[new YamlScalarNode(key)] = node;
            Where[node] = At(from);
        }

        void Set(string key, PyValue v) => Set(key, Yaml(v, key), v);

        YamlNode Yaml(PyValue v, string key) => v switch
        {
            PyNone => Plain("null"),
            PyBool b => Plain(b.Value ? "true" : "false"),
            PyInt i => Plain(i.Value.ToString(CultureInfo.InvariantCulture)),
            PyFloat f => Plain(f.Value.ToString("R", CultureInfo.InvariantCulture)),
            PyStr s => new YamlScalarNode(s.Value) { Style = YamlDotNet.Core.ScalarStyle.DoubleQuoted },
            PyList l => Track(new YamlSequenceNode(l.Items.Select(x => Yaml(x, key))), v),
            _ => throw Err(v, $"{key}: expected a literal value, got {PyConfig.Repr(v)}"),
        };

        static YamlScalarNode Plain(string s) => new(s) { Style = YamlDotNet.Core.ScalarStyle.Plain };

        YamlNode Track(YamlNode n, PyValue v)
        {
            Where[n] = At(v);
            return n;
        }

        T? Opt<T>(PyDict d, string key) where T : PyValue => d.Get(key) switch
        {
            null or PyNone => null,
            T t => t,
            var v => throw Err(v, $"{key}: unexpected {PyConfig.Repr(v)}"),
        };

        bool Flag(PyDict d, string key, bool dflt, string path) => d.Get(key) switch
        {
            null => dflt,
            PyBool b => b.Value,
            var v => throw Err(v, $"{path}.{key}: expected True or False, got {PyConfig.Repr(v)}"),
        };

        double Number(PyValue v, string path) => v switch
        {
            PyInt i => i.Value,
            PyFloat f => f.Value,
            _ => throw Err(v, $"{path}: expected a number, got {PyConfig.Repr(v)}"),
        };

        void Require(PyDict d, string key, string path, Func<PyValue?, bool> ok, string expected)
        {
            var v = d.Get(key);
            if (!ok(v)) throw Err(v ?? d, $"{path}.{key}: {(v is null ? "not set" : PyConfig.Repr(v))} is not supported (ilgpu-tune needs {expected})");
        }

        static bool Is(PyValue? v, object expected) => (v, expected) switch
        {
            (PyBool b, bool e) => b.Value == e,
            (PyStr s, string e) => s.Value == e,
            (PyInt i, double e) => i.Value == e,
            (PyFloat f, double e) => f.Value == e,
            _ => false,
        };

        public void Map()
        {
            foreach (var (name, v) in py.Globals)
                switch (name)
                {
                    case "sequence_parallel_size" when v is PyInt { Value: > 1 }:
                        throw Err(v, "sequence_parallel_size > 1 needs several GPUs; multi-GPU training is not there yet (set it to 1)");
                    case "launcher" when v is not PyStr { Value: "none" }:
                        throw Err(v, "launcher: multi-GPU launchers are not there yet; ilgpu-tune trains in one process on one GPU");
                    case "load_from" when v is not PyNone:
                        throw Err(v, "load_from: start from a checkpoint with `ilgpu-tune train CONFIG --resume CHECKPOINT`, or from a PEFT adapter with model.peft_model");
                    case "resume" when Is(v, true):
                        throw Err(v, "resume = True: pass --resume to `ilgpu-tune train` instead");
                }

            var model = Typed(Global("model"), "model", "SupervisedFinetune", "DPO", "ORPO", "RewardModel");
            Known(model, "model", "llm", "lora", "peft_model", "use_activation_checkpointing", "use_varlen_attn", "tokenizer", "max_position_embeddings",
                "ref_llm", "beta", "loss_type", "label_smoothing", "penalty_type", "penalty_weight", "reward_token_id");
            PreferenceModel(model);
            Require(model, "max_position_embeddings", "model", v => v is null or PyNone, "None (context extension by RoPE scaling is not there yet)");
            var llm = Typed(model.Get("llm"), "model.llm", "from_pretrained");
            Known(llm, "model.llm", "pretrained_model_name_or_path", "trust_remote_code", "torch_dtype", "quantization_config",
                "attn_implementation", "low_cpu_mem_usage", "use_cache", "load_in_8bit", "load_in_4bit");
            if (Flag(llm, "load_in_8bit", false, "model.llm") || Flag(llm, "load_in_4bit", false, "model.llm"))
                throw Err(llm, "model.llm.load_in_8bit / load_in_4bit: quantize with quantization_config=dict(type=BitsAndBytesConfig, load_in_4bit=True, " +
                    "bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True) (8-bit LLM.int8 training is not supported)");
            var modelPath = llm.Get("pretrained_model_name_or_path") as PyStr
                ?? throw Err(llm, "model.llm.pretrained_model_name_or_path: expected a model folder path");
            Set("pretrained_model_name_or_path", Yaml(modelPath with { Value = LocalPath(modelPath.Value) }, "pretrained_model_name_or_path"), modelPath);
            Quantization(llm.Get("quantization_config"));
            Lora(model);
            Set("gradient_checkpointing", model.Get("use_activation_checkpointing") ?? new PyBool(true, model.Line));
            if (Flag(model, "use_varlen_attn", false, "model") is false)
                Notes.Add("use_varlen_attn=False: packed samples still never attend to each other here (as XTuner's use_varlen_attn=True); " +
                    "losses differ slightly from XTuner's cross-sample attention");

            var loader = RequireDict("train_dataloader");
            Known(loader, "train_dataloader", "batch_size", "num_workers", "dataset", "sampler", "collate_fn", "persistent_workers", "pin_memory", "prefetch_factor");
            if (loader.Get("batch_size") is { } bs) Set("batch_size", bs);
            if (loader.Get("sampler") is { } sampler)
            {
                var s = Typed(sampler, "train_dataloader.sampler", "DefaultSampler", "SequenceParallelSampler");
                Known(s, "train_dataloader.sampler", "shuffle", "seed", "round_up");
                Require(s, "shuffle", "train_dataloader.sampler", v => v is null || Is(v, true), "shuffle=True (the order is the seed's shuffle)");
            }
            if (loader.Get("collate_fn") is { } collate)
                Known(Typed(collate, "train_dataloader.collate_fn", "default_collate_fn", "preference_collate_fn"), "train_dataloader.collate_fn", "use_varlen_attn", "pad_index", "return_hf_format");
            Dataset(loader.Get("dataset") ?? throw Err(loader, "train_dataloader.dataset: missing"));

            Optimizer(RequireDict("optim_wrapper"));
            // Older XTuner configs write train_cfg = dict(by_epoch=True, max_epochs=..., val_interval=1) (mmengine's EpochBasedTrainLoop).
            var train = Global("train_cfg") is PyDict { } tc && tc.Get("type") is null ? tc : Typed(Global("train_cfg"), "train_cfg", "TrainLoop", "EpochBasedTrainLoop");
            Known(train, "train_cfg", "max_epochs", "max_iters", "val_interval", "val_begin", "by_epoch");
            Require(train, "by_epoch", "train_cfg", v => v is null || Is(v, true), "by_epoch=True (or train_cfg = dict(type=TrainLoop, max_iters=N))");
            var maxEpochs = train.Get("max_epochs");
            if (maxEpochs is not null and not PyNone) Set("max_epochs", maxEpochs);
            if (train.Get("max_iters") is { } mi and not PyNone) Set("max_iters", mi);
            Schedule(Global("param_scheduler"), maxEpochs is PyInt e ? e.Value : 1);
            Hooks();
            if (Global("randomness") is PyDict r)
            {
                Known(r, "randomness", "seed", "deterministic", "diff_rank_seed");
                if (r.Get("seed") is PyInt seed) Set("seed", seed);
                else Notes.Add("randomness.seed is None: XTuner would draw a random seed; ilgpu-tune uses seed 42 so the run repeats (set randomness.seed to choose)");
            }
            if (Global("work_dir") is PyStr wd) Set("work_dir", wd);
        }

        void Quantization(PyValue? q)
        {
            if (q is null or PyNone) return;
            var b = Typed(q, "model.llm.quantization_config", "BitsAndBytesConfig");
            const string p = "model.llm.quantization_config";
            Known(b, p, "load_in_4bit", "load_in_8bit", "llm_int8_threshold", "llm_int8_has_fp16_weight", "llm_int8_skip_modules",
                "bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant", "bnb_4bit_quant_type", "bnb_4bit_quant_storage");
            if (Flag(b, "load_in_8bit", false, p))
                throw Err(b.Get("load_in_8bit")!, $"{p}.load_in_8bit: 8-bit (LLM.int8) training is not supported; use load_in_4bit=True with bnb_4bit_quant_type='nf4' (QLoRA)");
            if (!Flag(b, "load_in_4bit", false, p)) return;
            // BitsAndBytesConfig's own defaults are fp4 without double quantization; we train on NF4 with double quantization.
            Require(b, "bnb_4bit_quant_type", p, v => Is(v, "nf4"), "'nf4'");
            Require(b, "bnb_4bit_use_double_quant", p, v => Is(v, true), "True (NF4 with double quantization, as QLoRA)");
            Require(b, "llm_int8_skip_modules", p, v => v is null or PyNone, "None");
            Set("quantization", new PyStr("nf4", b.Line));
        }

        void Lora(PyDict model)
        {
            var peft = model.Get("peft_model");
            if (model.Get("lora") is null or PyNone)
            {
                if (peft is not null and not PyNone) throw Err(peft, "model.peft_model needs model.lora");
                Set("lora", new PyNone(model.Line));
                return;
            }
            var l = Typed(model.Get("lora"), "model.lora", "LoraConfig");
            const string p = "model.lora";
            Known(l, p, "r", "lora_alpha", "lora_dropout", "bias", "task_type", "target_modules", "use_rslora", "fan_in_fan_out",
                "init_lora_weights", "modules_to_save", "use_dora", "inference_mode");
            Require(l, "bias", p, v => v is null || Is(v, "none"), "'none'");
            Require(l, "task_type", p, v => v is null || Is(v, "CAUSAL_LM"), "'CAUSAL_LM'");
            Require(l, "fan_in_fan_out", p, v => v is null || Is(v, false), "False");
            Require(l, "init_lora_weights", p, v => v is null || Is(v, true), "True (PEFT's default init)");
            Require(l, "modules_to_save", p, v => v is null or PyNone, "None");
            Require(l, "use_dora", p, v => v is null || Is(v, false), "False (DoRA is not there yet)");
            // PEFT's LoraConfig defaults where the config leaves a value out.
            var node = new YamlMappingNode();
            void Add(string k, PyValue v)
            {
                var y = Yaml(v, "lora." + k);
                node.Children[new YamlScalarNode(k)] = y;
                Where[y] = At(v);
            }
            Add("r", l.Get("r") ?? new PyInt(8, l.Line));
            Add("lora_alpha", l.Get("lora_alpha") ?? new PyInt(8, l.Line));
            Add("lora_dropout", l.Get("lora_dropout") ?? new PyFloat(0, l.Line));
            Add("target_modules", l.Get("target_modules") ?? new PyNone(l.Line));
            Add("use_rslora", l.Get("use_rslora") ?? new PyBool(false, l.Line));
            if (peft is PyStr adapter) Add("init_adapter", adapter with { Value = LocalPath(adapter.Value) });
            else if (peft is not null and not PyNone) throw Err(peft, "model.peft_model: expected a PEFT adapter folder path");
            Set("lora", node, l);
        }

        void Dataset(PyValue dataset)
        {
            // ConcatDataset(datasets=[...]) of process_hf_dataset parts that differ only in their data files.
            var parts = new List<PyDict>();
            if (dataset is PyDict d && TypeOf(d) == "ConcatDataset")
            {
                Known(d, "train_dataloader.dataset", "datasets");
                parts.AddRange((d.Get("datasets") as PyList ?? throw Err(d, "ConcatDataset: expected datasets=[...]")).Items
                    .Select((x, i) => Typed(x, $"ConcatDataset.datasets[{i}]", "process_hf_dataset")));
                if (parts.Count == 0) throw Err(d, "ConcatDataset: datasets is empty");
            }
            else if (dataset is PyDict pd && TypeOf(pd) == "build_preference_dataset")
            {
                PreferenceDataset(pd);
                return;
            }
            else parts.Add(Typed(dataset, "train_dataloader.dataset", "process_hf_dataset"));

            var files = new List<PyValue>();
            string? signature = null;
            foreach (var part in parts)
            {
                const string p = "process_hf_dataset";
                Known(part, p, "dataset", "tokenizer", "max_length", "dataset_map_fn", "template_map_fn", "remove_unused_columns",
                    "shuffle_before_pack", "pack_to_max_length", "use_varlen_attn", "input_ids_with_output", "max_dataset_length",
                    "split", "rename_maps", "map_num_proc", "do_dataset_tokenization", "with_map_fn");
                Require(part, "input_ids_with_output", p, v => v is null || Is(v, true), "True");
                Require(part, "max_dataset_length", p, v => v is null or PyNone, "None (every record is used)");
                Require(part, "split", p, v => v is null || Is(v, "train"), "'train'");
                Require(part, "rename_maps", p, v => v is null or PyNone || v is PyList { Items.Count: 0 }, "[] (rename the columns in the data)");
                files.AddRange(DataFiles(part.Get("dataset") ?? throw Err(part, $"{p}.dataset: missing")));
                string sig = string.Join("|", new[] { "max_length", "dataset_map_fn", "template_map_fn", "shuffle_before_pack", "pack_to_max_length" }
                    .Select(k => part.Get(k) is { } v ? PyConfig.Repr(v) : ""));
                if (signature is not null && sig != signature)
                    throw Err(part, "ConcatDataset: the parts differ in max_length, map fn, template or packing; ilgpu-tune trains one such setting per run");
                signature = sig;
            }
            var first = parts[0];
            Set("data_path", files.Count == 1 ? files[0] : new PyList(files, false, first.Line));
            if (first.Get("tokenizer") is PyDict tok) Tokenizer(tok);
            else if (Global("tokenizer") is PyDict globalTok) Tokenizer(globalTok);
            if (first.Get("max_length") is { } ml) Set("max_length", ml);
            if (first.Get("pack_to_max_length") is { } pack) Set("pack_to_max_length", pack);
            if (first.Get("shuffle_before_pack") is { } sbp) Set("shuffle_before_pack", sbp);

            var mapFn = first.Get("dataset_map_fn");
            if (mapFn is null or PyNone) Set("dataset_map_fn", new PyStr("conversation", first.Line));
            else if (mapFn is PySymbol fn)
            {
                try
                {
                    DatasetMapFns.Parse(fn.Short);
                }
                catch (ArgumentException e)
                {
                    throw Err(fn, $"dataset_map_fn={fn.Short}: {e.Message}");
                }
                Set("dataset_map_fn", new PyStr(fn.Short, fn.Line));
            }
            else throw Err(mapFn, $"dataset_map_fn: expected one of XTuner's *_map_fn or None, got {PyConfig.Repr(mapFn)}");

            var tmpl = first.Get("template_map_fn");
            if (tmpl is null or PyNone) Set("prompt_template", new PyStr("none", first.Line));
            else
            {
                var t = Typed(tmpl, "template_map_fn", "template_map_fn_factory");
                Known(t, "template_map_fn", "template");
                Set("prompt_template", new PyStr(TemplateName(t.Get("template") ?? throw Err(t, "template_map_fn_factory: template= missing")), t.Line));
            }
        }

        // model=dict(type=DPO | ORPO | RewardModel, beta=, loss_type=, label_smoothing=, penalty_type=, penalty_weight=).
        void PreferenceModel(PyDict model)
        {
            string type = TypeOf(model);
            var preferenceKeys = new[] { "ref_llm", "beta", "loss_type", "label_smoothing", "penalty_type", "penalty_weight", "reward_token_id" };
            if (type == "SupervisedFinetune")
            {
                if (preferenceKeys.Select(model.Get).FirstOrDefault(v => v is not null) is { } stray)
                    throw Err(stray, "model: a preference setting on SupervisedFinetune (use type=DPO, ORPO or RewardModel)");
                return;
            }
            Set("preference", new PyStr(type switch { "DPO" => "dpo", "ORPO" => "orpo", _ => "reward" }, model.Line));
            Require(model, "ref_llm", "model", v => v is null or PyNone, "None (the reference is the policy's own base: LoRA switched off, or the initial weights' log-probs)");
            foreach (var k in new[] { "beta", "loss_type", "label_smoothing", "penalty_type", "penalty_weight" })
                if (model.Get(k) is { } v) Set(k, v);
            if (model.Get("reward_token_id") is { } r) Set("reward_token_id", r is PyInt { Value: -1 } ? new PyNone(r.Line) : r);
        }

        // build_preference_dataset(dataset=load_dataset(...), max_length, max_packed_length, is_dpo, is_reward, reward_token_id, ...):
        // records already in XTuner's preference format (dataset_map_fn=None), rendered with the tokenizer's chat template.
        void PreferenceDataset(PyDict d)
        {
            const string p = "build_preference_dataset";
            Known(d, p, "dataset", "tokenizer", "max_length", "dataset_map_fn", "is_dpo", "is_reward", "reward_token_id", "num_proc",
                "use_varlen_attn", "max_packed_length", "shuffle_before_pack");
            Require(d, "dataset_map_fn", p, v => v is null or PyNone,
                "None: records already {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]} (convert other layouts to that JSONL first)");
            Set("data_path", DataFiles(d.Get("dataset") ?? throw Err(d, $"{p}.dataset: missing")) is { Count: 1 } one ? one[0] : throw Err(d, $"{p}: one data file"));
            if (d.Get("tokenizer") is PyDict tok) Tokenizer(tok);
            else if (Global("tokenizer") is PyDict globalTok) Tokenizer(globalTok);
            // XTuner renders with the tokenizer's chat template; a prompt_template = PROMPT_TEMPLATE.<name> global picks an XTuner one.
            Set("prompt_template", new PyStr(Global("prompt_template") is PySymbol t ? TemplateName(t) : "auto", d.Line));
            // XTuner cuts each side to max_length and packs rows of max_packed_length; here rows are max_length and each side
            // gets half of it.
            if (d.Get("max_packed_length") is { } mpl) Set("max_length", mpl);
            else if (d.Get("max_length") is PyInt ml) Set("max_length", new PyInt(2 * ml.Value, ml.Line));
            if (d.Get("max_packed_length") is not null && d.Get("max_length") is PyInt side)
                Notes.Add($"max_packed_length: rows of max_packed_length tokens, each chosen / rejected side truncated to half of it (XTuner: max_length {side.Value} per side)");
            if (d.Get("shuffle_before_pack") is { } sbp) Set("shuffle_before_pack", sbp);
            if (d.Get("reward_token_id") is PyInt { Value: >= 0 } rt && Root.Children.ContainsKey(new YamlScalarNode("preference"))) Set("reward_token_id", rt);
        }

        string TemplateName(PyValue v) => v is PySymbol s && s.Name.Contains("PROMPT_TEMPLATE.", StringComparison.Ordinal)
            && XtunerTemplates.Prompt.ContainsKey(s.Short) ? s.Short
            : throw Err(v, $"template: expected PROMPT_TEMPLATE.<name> with a name XTuner knows ({string.Join(", ", XtunerTemplates.Prompt.Keys)}), got {PyConfig.Repr(v)}");

        void Tokenizer(PyDict tok)
        {
            Typed(tok, "tokenizer", "from_pretrained");
            Known(tok, "tokenizer", "pretrained_model_name_or_path", "trust_remote_code", "padding_side", "use_fast", "encode_special_tokens");
            if (tok.Get("pretrained_model_name_or_path") is not PyStr path) throw Err(tok, "tokenizer.pretrained_model_name_or_path: expected a folder path");
            var modelPath = Root.Children[new YamlScalarNode("pretrained_model_name_or_path")] as YamlScalarNode;
            string local = LocalPath(path.Value);
            if (modelPath?.Value != local) Set("tokenizer", path with { Value = local });
        }

        // load_dataset(path='json', data_files=...) or load_dataset(path=<local folder or file>).
        List<PyValue> DataFiles(PyValue ds)
        {
            var d = Typed(ds, "process_hf_dataset.dataset", "load_dataset");
            Known(d, "load_dataset", "path", "data_files", "split", "name", "trust_remote_code");
            Require(d, "split", "load_dataset", v => v is null or PyNone || Is(v, "train"), "'train'");
            var path = d.Get("path") as PyStr ?? throw Err(d, "load_dataset: path= missing (e.g. path='json', data_files=...)");
            if (path.Value is "json" or "csv" or "parquet" or "text")
            {
                var files = d.Get("data_files") switch
                {
                    PyStr s => [s],
                    PyList l => l.Items,
                    PyDict { Items.Count: 1 } dict when dict.Get("train") is { } train => train is PyList tl ? tl.Items : [train],
                    var v => throw Err(v ?? d, $"load_dataset(path='{path.Value}'): data_files must be a path, a list of paths or dict(train=...)"),
                };
                return files.Select(f => f is PyStr s ? (PyValue)(s with { Value = LocalPath(s.Value) })
                    : throw Err(f, $"data_files: expected a path, got {PyConfig.Repr(f)}")).ToList();
            }
            if (d.Get("data_files") is { } extra and not PyNone) throw Err(extra, "load_dataset: data_files goes with path='json' (or csv, parquet, text)");
            string local = LocalPath(path.Value);
            if (!File.Exists(local) && !Directory.Exists(local) && !path.Value.StartsWith('@'))
                throw Err(path, $"load_dataset(path='{path.Value}'): no such local file or folder; a Hugging Face Hub dataset must be downloaded first " +
                    $"(e.g. `huggingface-cli download --repo-type dataset {path.Value} --local-dir data`), then point path at it or use path='json', data_files=...");
            return [path with { Value = local }];
        }

        // XTuner resolves relative paths against the working directory; when nothing is there but the config's folder has
        // it, take that one (configs shipped next to their data).
        string LocalPath(string p)
        {
            if (p.StartsWith('@') || Path.IsPathRooted(p) || File.Exists(p) || Directory.Exists(p)) return p;
            string beside = Path.Combine(_dir, p);
            return File.Exists(beside) || Directory.Exists(beside) ? beside : p;
        }

        void Optimizer(PyDict w)
        {
            string type = TypeOf(w);
            const string p = "optim_wrapper";
            Known(w, p, "optimizer", "clip_grad", "accumulative_counts", "loss_scale", "dtype");
            string dtype = type switch
            {
                "AmpOptimWrapper" => w.Get("dtype") switch
                {
                    null or PyNone => "float16",
                    PyStr { Value: "float16" or "bfloat16" } s => s.Value,
                    var v => throw Err(v, $"{p}.dtype: expected 'float16' or 'bfloat16', got {PyConfig.Repr(v)}"),
                },
                "OptimWrapper" => "float32",
                _ => throw Err(w, $"{p}: type {type} is not supported (AmpOptimWrapper for float16/bfloat16 mixed precision, OptimWrapper for float32)"),
            };
            Set("dtype", new PyStr(dtype, w.Line));
            if (type == "OptimWrapper" && w.Get("dtype") is { } dt and not PyNone) throw Err(dt, $"{p}.dtype: OptimWrapper trains in float32; use AmpOptimWrapper for {PyConfig.Repr(dt)}");
            Require(w, "loss_scale", p, v => v is null || Is(v, "dynamic"), "'dynamic'");
            if (w.Get("accumulative_counts") is { } acc) Set("accumulative_counts", acc);
            else Set("accumulative_counts", new PyInt(1, w.Line));

            var clip = w.Get("clip_grad");
            if (clip is null or PyNone) Set("max_norm", new PyInt(0, w.Line)); // no clipping
            else
            {
                var c = clip as PyDict ?? throw Err(clip, $"{p}.clip_grad: expected dict(max_norm=...)");
                Known(c, $"{p}.clip_grad", "max_norm", "error_if_nonfinite", "norm_type");
                Require(c, "norm_type", $"{p}.clip_grad", v => v is null || Is(v, 2.0), "2");
                Require(c, "error_if_nonfinite", $"{p}.clip_grad", v => v is null || Is(v, false), "False");
                Set("max_norm", c.Get("max_norm") ?? throw Err(c, $"{p}.clip_grad.max_norm: missing"));
            }

            var opt = Typed(w.Get("optimizer"), $"{p}.optimizer", "AdamW", "PagedAdamW", "PagedAdamW32bit");
            Known(opt, $"{p}.optimizer", "lr", "betas", "weight_decay", "eps", "amsgrad", "foreach", "fused", "maximize", "capturable");
            Require(opt, "eps", $"{p}.optimizer", v => v is null || Is(v, 1e-8), "1e-8");
            Require(opt, "amsgrad", $"{p}.optimizer", v => v is null || Is(v, false), "False");
            Require(opt, "maximize", $"{p}.optimizer", v => v is null || Is(v, false), "False");
            Set("lr", opt.Get("lr") ?? throw Err(opt, $"{p}.optimizer.lr: missing"));
            if (opt.Get("betas") is { } betas) Set("betas", betas);
            Set("weight_decay", opt.Get("weight_decay") ?? new PyFloat(0.01, opt.Line)); // torch AdamW's default
            if (TypeOf(opt) != "AdamW")
            {
                Set("paged_optimizer", new PyBool(true, opt.Line));
                Notes.Add($"{TypeOf(opt)}: AdamW with its 32-bit state in page-locked host memory (paged_optimizer)");
            }
        }

        // XTuner's schedule: LinearLR(start_factor=1e-5, begin=0, end=W) then CosineAnnealingLR(eta_min=0, begin=W, end=max_epochs),
        // both by_epoch=True with convert_to_iter_based=True; or the cosine alone (no warmup).
        void Schedule(PyValue? sched, long maxEpochs)
        {
            if (sched is null) throw new ConfigException($"{py.Source}: 'param_scheduler = [...]' is missing");
            var items = sched is PyList l ? l.Items : [sched];
            double warmupEnd = 0;
            int k = 0;
            void ByEpoch(PyDict s, string path)
            {
                Require(s, "by_epoch", path, v => v is null || Is(v, true), "by_epoch=True");
                Require(s, "convert_to_iter_based", path, v => Is(v, true), "convert_to_iter_based=True");
            }
            if (items.Count == 2)
            {
                var lin = Typed(items[0], "param_scheduler[0]", "LinearLR");
                Known(lin, "LinearLR", "start_factor", "end_factor", "by_epoch", "begin", "end", "convert_to_iter_based");
                ByEpoch(lin, "LinearLR");
                Require(lin, "start_factor", "LinearLR", v => Is(v, 1e-5), "1e-5, as XTuner's configs");
                Require(lin, "end_factor", "LinearLR", v => v is null || Is(v, 1.0), "1.0");
                Require(lin, "begin", "LinearLR", v => v is null || Is(v, 0.0), "0");
                warmupEnd = Number(lin.Get("end") ?? throw Err(lin, "LinearLR.end: missing"), "LinearLR.end");
                k = 1;
            }
            else if (items.Count != 1) throw Err(sched, "param_scheduler: expected [LinearLR(...), CosineAnnealingLR(...)] or one CosineAnnealingLR");
            var cos = Typed(items[k], $"param_scheduler[{k}]", "CosineAnnealingLR");
            Known(cos, "CosineAnnealingLR", "eta_min", "by_epoch", "begin", "end", "convert_to_iter_based", "T_max");
            Require(cos, "T_max", "CosineAnnealingLR", v => v is null or PyNone, "end=max_epochs instead of T_max (the cosine reaches eta_min at the end of training)");
            ByEpoch(cos, "CosineAnnealingLR");
            Require(cos, "eta_min", "CosineAnnealingLR", v => v is null || Is(v, 0.0), "eta_min=0.0");
            if (cos.Get("begin") is { } b && Number(b, "CosineAnnealingLR.begin") != warmupEnd)
                throw Err(b, $"CosineAnnealingLR.begin must equal the LinearLR end ({warmupEnd})");
            if (cos.Get("end") is { } e && Number(e, "CosineAnnealingLR.end") != maxEpochs)
                throw Err(e, $"CosineAnnealingLR.end must equal max_epochs ({maxEpochs})");
            // Keep the config's own warmup_ratio when it spells the same end (warmup_ratio * max_epochs), so W rounds alike.
            PyValue ratio = Global("warmup_ratio") is { } wr && (wr is PyInt or PyFloat) && Number(wr, "warmup_ratio") * maxEpochs == warmupEnd
                ? wr : new PyFloat(warmupEnd / maxEpochs, items[0].Line);
            Set("warmup_ratio", ratio);
        }

        void Hooks()
        {
            if (Global("default_hooks") is PyDict hooks)
                foreach (var (name, h) in hooks.Items)
                {
                    if (h is PyNone) continue;
                    var d = h as PyDict ?? throw Err(h, $"default_hooks.{name}: expected dict(type=...)");
                    switch (TypeOf(d))
                    {
                        case "CheckpointHook":
                            Known(d, "CheckpointHook", "by_epoch", "interval", "max_keep_ckpts", "save_optimizer", "save_last", "save_param_scheduler", "out_dir");
                            Require(d, "out_dir", "CheckpointHook", v => v is null or PyNone, "None (checkpoints go into the work dir)");
                            if (!Flag(d, "by_epoch", true, "CheckpointHook"))
                            {
                                if (d.Get("interval") is { } iv) Set("save_steps", iv);
                            }
                            else Notes.Add("CheckpointHook by_epoch=True: ilgpu-tune checkpoints every save_steps iterations (500 unless " +
                                "--cfg-options save_steps=N) and at the end, not once per epoch");
                            Set("save_total_limit", d.Get("max_keep_ckpts") ?? new PyInt(-1, d.Line));
                            break;
                        case "LoggerHook":
                            Known(d, "LoggerHook", "log_metric_by_epoch", "interval", "ignore_last", "interval_exp_name");
                            if (d.Get("interval") is { } li) Set("logging_steps", li);
                            break;
                        case "IterTimerHook" or "ParamSchedulerHook" or "DistSamplerSeedHook" or "RuntimeInfoHook" or "EmptyCacheHook": break;
                        case var t: Notes.Add($"default_hooks.{name} ({t}) is ignored"); break;
                    }
                }
            if (Global("custom_hooks") is PyList custom)
                foreach (var h in custom.Items)
                {
                    var d = h as PyDict ?? throw Err(h, "custom_hooks: expected dict(type=...) items");
                    switch (TypeOf(d))
                    {
                        case "EvaluateChatHook":
                            Known(d, "EvaluateChatHook", "tokenizer", "every_n_iters", "evaluation_inputs", "system", "prompt_template",
                                "max_new_tokens", "stop_words", "generation_kwargs", "evaluation_images", "image_processor");
                            Require(d, "evaluation_images", "EvaluateChatHook", v => v is null or PyNone, "no images (text models only)");
                            if (d.Get("every_n_iters") is { } every) Set("evaluation_freq", every);
                            if (d.Get("evaluation_inputs") is { } inputs) Set("evaluation_inputs", inputs is PyStr ? new PyList([inputs], false, inputs.Line) : inputs);
                            Set("evaluation_max_new_tokens", d.Get("max_new_tokens") ?? new PyInt(600, d.Line)); // the hook's default
                            switch (d.Get("system"))
                            {
                                case null or PyNone or PyStr { Value: "" }: break;
                                case PyStr s: Set("system", s); break;
                                case PySymbol s when s.Name.Contains("SYSTEM_TEMPLATE.", StringComparison.Ordinal) && XtunerTemplates.System.ContainsKey(s.Short):
                                    Set("system_template", new PyStr(s.Short, s.Line)); break;
                                case var s: throw Err(s, $"EvaluateChatHook.system: expected a string or SYSTEM_TEMPLATE.<name>, got {PyConfig.Repr(s)}");
                            }
                            if (d.Get("prompt_template") is { } pt and not PyNone
                                && (Root.Children[new YamlScalarNode("prompt_template")] as YamlScalarNode)?.Value is { } used && TemplateName(pt) != used)
                                throw Err(pt, $"EvaluateChatHook.prompt_template {TemplateName(pt)} differs from the dataset's template {used}; ilgpu-tune evaluates with the training template");
                            break;
                        case "DatasetInfoHook" or "VarlenAttnArgsToMessageHubHook" or "ThroughputHook": break;
                        case var t: Notes.Add($"custom_hooks: {t} is ignored"); break;
                    }
                }
        }
    }
}
