using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using IlgpuTune.TestKit;
using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

/// <summary>
/// Each class of bad input fed through each verb that reads it, as a user would (the built CLI in a child process):
/// exit 2, one `error:` line, no stack trace, no output folder left behind, within a time bound. The cases run in
/// parallel (about a minute of CPU in all); a failure lists every failing case at once.
/// </summary>
public sealed class CliTableTests(ITestOutputHelper log)
{
    static readonly TimeSpan PerCase = TimeSpan.FromSeconds(40);

    /// <summary>One row: a bad-input class through one verb.</summary>
    /// <param name="Make">writes the inputs into the case folder; returns the command line, stdin and the output path that must not exist after</param>
    public sealed record Case(string Verb, string Class, Func<string, (string[] Args, string? Stdin, string? Output)> Make,
        bool MultiLine = false)
    {
        public override string ToString() => $"{Verb} × {Class}";
    }

    [Fact]
    public void EveryBadInput_ThroughEveryVerb_OneErrorLine_Exit2_NoOutput() => RunTable(Cases().ToList());

    void RunTable(List<Case> cases)
    {
        using var root = new TempDir();
        var failures = new ConcurrentBag<string>();
        var rows = new ConcurrentBag<string>();
        var sw = Stopwatch.StartNew();
        Parallel.ForEach(cases.Select((c, i) => (c, i)), new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount + 1 }, x =>
        {
            var (c, i) = x;
            string dir = Path.Combine(root.Path, $"case{i:D3}");
            Directory.CreateDirectory(dir);
            var (args, stdin, output) = c.Make(dir);
            var r = CliRunner.Run(args, stdin, PerCase, new Dictionary<string, string>
            {
                ["ILGPUTUNE_CRASH_DIR"] = Path.Combine(dir, "crash"),
                ["ILGPUTUNE_DEVICE"] = "cpu",
            });
            var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var problems = new List<string>();
            if (r.TimedOut) problems.Add($"still running after {PerCase.TotalSeconds} s");
            if (r.Code != 2) problems.Add($"exit {r.Code}");
            if (lines.Length == 0 || !lines[0].StartsWith("error: ", StringComparison.Ordinal)) problems.Add("first stderr line is not 'error: ...'");
            if (lines.Count(l => l.StartsWith("error:", StringComparison.Ordinal)) > 1) problems.Add("several error lines");
            if (!c.MultiLine && lines.Length > 1) problems.Add($"{lines.Length} stderr lines");
            if (lines.Any(l => l.StartsWith("at ", StringComparison.Ordinal) || l.Contains("Unhandled exception", StringComparison.OrdinalIgnoreCase)))
                problems.Add("stack trace");
            if (output is not null && Leftovers(output) is { Length: > 0 } left) problems.Add($"left {left}");
            string first = lines.FirstOrDefault() ?? "";
            rows.Add($"{c,-55} exit {r.Code,3} {r.Elapsed.TotalSeconds,5:F1} s  {(first.Length > 150 ? first[..150] + "…" : first)}");
            if (problems.Count > 0)
                failures.Add($"{c}: {string.Join("; ", problems)}\n    args: {string.Join(' ', args)}\n    stderr: {r.Stderr.Trim().Replace("\n", "\n            ")}");
        });
        foreach (var row in rows.Order(StringComparer.Ordinal)) log.WriteLine(row);
        log.WriteLine($"{cases.Count} cases in {sw.Elapsed.TotalSeconds:F1} s");
        Assert.True(failures.IsEmpty, $"{failures.Count} of {cases.Count} cases failed:\n" + string.Join("\n", failures.Order(StringComparer.Ordinal)));
    }

    // The output itself, or a temp sibling (OUT.tmp-…) an interrupted writer would leave.
    static string Leftovers(string output)
    {
        var left = new List<string>();
        if (Directory.Exists(output) || File.Exists(output)) left.Add(output);
        string? parent = Path.GetDirectoryName(output);
        if (parent is not null && Directory.Exists(parent))
            left.AddRange(Directory.EnumerateFileSystemEntries(parent, Path.GetFileName(output) + ".*"));
        return string.Join(", ", left);
    }

    // ---- inputs ----

    static string TinyModel => Path.Combine(Repo.Root, "src", "IlgpuTune.Training", "Assets", "tiny");
    static string LoraBase => Repo.Fixture("tiny/llama");

    // A copy of the tiny model (config, safetensors, tokenizer) changed by `mutate`.
    static string Model(string dir, Action<string>? mutate = null)
    {
        string m = Path.Combine(dir, "model");
        Directory.CreateDirectory(m);
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(TinyModel, f), Path.Combine(m, f));
        mutate?.Invoke(m);
        return m;
    }

    static string Adapter(string dir, Action<string>? mutate = null)
    {
        string a = Path.Combine(dir, "adapter");
        Directory.CreateDirectory(a);
        foreach (var f in Directory.GetFiles(Path.Combine(LoraBase, "adapter"))) File.Copy(f, Path.Combine(a, Path.GetFileName(f)));
        mutate?.Invoke(a);
        return a;
    }

    static string GoodData(string dir)
    {
        string p = Path.Combine(dir, "data.jsonl");
        File.WriteAllLines(p, File.ReadLines(Path.Combine(TinyModel, "colorist.jsonl")).Take(4));
        return p;
    }

    static string GoodMessages(string dir)
    {
        string p = Path.Combine(dir, "messages.json");
        File.WriteAllText(p, """[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "#ffffff"}]""");
        return p;
    }

    // A training config in the built-in's shape, for the model and data given. max_length leaves room for a whole sample
    // (the tiny tokenizer has few merges), so that train goes on to read the model.
    static string Config(string dir, string model, string data, string extra = "")
    {
        string p = Path.Combine(dir, "cfg.yaml");
        File.WriteAllText(p, $"""
            pretrained_model_name_or_path: "{model}"
            lora: {"{"}r: 4, lora_alpha: 8, lora_dropout: 0.0{"}"}
            data_path: "{data}"
            dataset_map_fn: colors
            prompt_template: qwen_chat
            max_length: 256
            batch_size: 1
            max_epochs: 1
            lr: 1.0e-3
            save_steps: 1000
            evaluation_inputs: []
            seed: 1
            {extra}
            """);
        return p;
    }

    static void Truncate(string file) => File.WriteAllBytes(file, File.ReadAllBytes(file)[..(int)(new FileInfo(file).Length / 2)]);
    static void Garbage(string file) => File.WriteAllBytes(file, [.. Enumerable.Range(0, 512).Select(i => (byte)(i * 151 + 7))]);
    static void Edit(string file, string from, string to) => File.WriteAllText(file, File.ReadAllText(file).Replace(from, to));

    // The verbs that read a model folder, with the given folder (and what each would write).
    static IEnumerable<(string Verb, Func<string, string, (string[], string?, string?)> Run)> ModelVerbs(bool tokenizerOnly, bool weightsOnly)
    {
        if (!weightsOnly)
        {
            yield return ("tokenize", (d, m) => (["tokenize", "--tokenizer", m], """["hello"]""", null));
            yield return ("render-template", (d, m) => (["render-template", "--tokenizer", m, "--messages", GoodMessages(d), "--prompt-template", "qwen_chat"], null, null));
            yield return ("check-dataset", (d, m) => (["check-dataset", "--data", GoodData(d), "--format", "colors", "--tokenizer", m, "--template", "qwen_chat", "--max-length", "256"], null, null));
            yield return ("log-dataset", (d, m) => (["log-dataset", "--data", GoodData(d), "--format", "colors", "--tokenizer", m, "--template", "qwen_chat", "--max-length", "256"], null, null));
        }
        if (!tokenizerOnly)
        {
            yield return ("convert merge", (d, m) => (["convert", "merge", m, Adapter(d), Path.Combine(d, "out")], null, Path.Combine(d, "out")));
            yield return ("convert quantize", (d, m) => (["convert", "quantize", m, Path.Combine(d, "out")], null, Path.Combine(d, "out")));
        }
        yield return ("chat", (d, m) => (["chat", m, "--prompt", "hi", "--max-new-tokens", "2", "--device", "cpu"], null, null));
        yield return ("train", (d, m) => (["train", Config(d, m, GoodData(d)), "--work-dir", Path.Combine(d, "work")], null, Path.Combine(d, "work")));
    }

    static IEnumerable<Case> ModelClass(string cls, Func<string, string> makeModel, bool tokenizerOnly = false, bool weightsOnly = false) =>
        ModelVerbs(tokenizerOnly, weightsOnly).Select(v => new Case(v.Verb, cls, d => v.Run(d, makeModel(d))));

    static IEnumerable<(string Verb, Func<string, string, (string[], string?, string?)> Run)> DataVerbs() =>
    [
        ("check-dataset", (d, data) => (["check-dataset", "--data", data, "--format", "colors", "--tokenizer", TinyModel, "--template", "qwen_chat", "--max-length", "256"], null, null)),
        ("log-dataset", (d, data) => (["log-dataset", "--data", data, "--format", "colors", "--tokenizer", TinyModel, "--template", "qwen_chat", "--max-length", "256"], null, null)),
        ("train", (d, data) => (["train", Config(d, TinyModel, data), "--work-dir", Path.Combine(d, "work")], null, Path.Combine(d, "work"))),
    ];

    static IEnumerable<Case> DataClass(string cls, Func<string, string> makeData) =>
        DataVerbs().Select(v => new Case(v.Verb, cls, d => v.Run(d, makeData(d)), MultiLine: true));

    static IEnumerable<(string Verb, Func<string, string, (string[], string?, string?)> Run)> ConfigVerbs() =>
    [
        ("train", (d, cfg) => (["train", cfg, "--work-dir", Path.Combine(d, "work")], null, Path.Combine(d, "work"))),
        ("check-dataset", (d, cfg) => (["check-dataset", cfg], null, null)),
        ("log-dataset", (d, cfg) => (["log-dataset", cfg], null, null)),
    ];

    static IEnumerable<Case> ConfigClass(string cls, Func<string, string> text) =>
        ConfigVerbs().Select(v => new Case(v.Verb, cls, d =>
        {
            string p = Path.Combine(d, "cfg.yaml");
            File.WriteAllText(p, text(d));
            return v.Run(d, p);
        }));

    static string ValidYaml(string d) => File.ReadAllText(Config(d, TinyModel, GoodData(d)));

    public static IEnumerable<Case> Cases()
    {

        // Model folders.
        foreach (var c in ModelClass("model folder missing", d => Path.Combine(d, "no-such-model"))) yield return c;
        foreach (var c in ModelClass("model folder is a file", d => { string f = Path.Combine(d, "model-file"); File.WriteAllText(f, "x"); return f; }))
            yield return c;
        foreach (var c in ModelClass("config.json truncated", d => Model(d, m => Truncate(Path.Combine(m, "config.json"))), weightsOnly: true))
            yield return c;
        foreach (var c in ModelClass("config.json empty", d => Model(d, m => File.WriteAllText(Path.Combine(m, "config.json"), "")), weightsOnly: true))
            yield return c;
        foreach (var c in ModelClass("config.json an array", d => Model(d, m => File.WriteAllText(Path.Combine(m, "config.json"), "[1, 2]")), weightsOnly: true))
            yield return c;
        foreach (var c in ModelClass("config.json hidden_size -1", d => Model(d, m => Edit(Path.Combine(m, "config.json"), "\"hidden_size\": 64", "\"hidden_size\": -1")),
            weightsOnly: true)) yield return c;
        foreach (var c in ModelClass("config.json 0 heads, no head_dim", d => Model(d, m =>
            {
                Edit(Path.Combine(m, "config.json"), "\"num_attention_heads\": 4", "\"num_attention_heads\": 0");
                Edit(Path.Combine(m, "config.json"), "\"head_dim\": 16,", "");
            }), weightsOnly: true)) yield return c;
        foreach (var c in ModelClass("model.safetensors truncated", d => Model(d, m => Truncate(Path.Combine(m, "model.safetensors"))), weightsOnly: true))
            yield return c;
        foreach (var c in ModelClass("model.safetensors garbage", d => Model(d, m => Garbage(Path.Combine(m, "model.safetensors"))), weightsOnly: true))
            yield return c;
        foreach (var c in ModelClass("no weights", d => Model(d, m => File.Delete(Path.Combine(m, "model.safetensors"))), weightsOnly: true))
            yield return c;
        foreach (var c in ModelClass("tokenizer.json truncated", d => Model(d, m => Truncate(Path.Combine(m, "tokenizer.json"))), tokenizerOnly: true))
            yield return c;
        foreach (var c in ModelClass("tokenizer.json garbage", d => Model(d, m => Garbage(Path.Combine(m, "tokenizer.json"))), tokenizerOnly: true))
            yield return c;
        foreach (var c in ModelClass("tokenizer.json id out of range", d => Model(d, m => Edit(Path.Combine(m, "tokenizer.json"), "\"id\": 556", "\"id\": 2147483647")),
            tokenizerOnly: true)) yield return c;
        foreach (var c in ModelClass("tokenizer_config.json truncated", d => Model(d, m => Truncate(Path.Combine(m, "tokenizer_config.json"))), tokenizerOnly: true))
            yield return c;
        foreach (var c in ModelClass("no tokenizer files", d => Model(d, m => File.Delete(Path.Combine(m, "tokenizer.json"))), tokenizerOnly: true))
            yield return c;

        // Dataset files.
        foreach (var c in DataClass("data file missing", d => Path.Combine(d, "none.jsonl"))) yield return c;
        foreach (var c in DataClass("jsonl line truncated", d => { string p = Path.Combine(d, "bad.jsonl"); File.WriteAllText(p, GoodLine + "\n{\"description\": \"x\""); return p; }))
            yield return c;
        foreach (var c in DataClass("jsonl record not an object", d => { string p = Path.Combine(d, "bad.jsonl"); File.WriteAllText(p, GoodLine + "\n[1, 2]\n"); return p; }))
            yield return c;
        foreach (var c in DataClass("data binary garbage", d => { string p = Path.Combine(d, "bad.jsonl"); Garbage(p); return p; }))
            yield return c;
        foreach (var c in DataClass("json lone surrogate", d => { string p = Path.Combine(d, "bad.jsonl"); File.WriteAllText(p, "{\"description\": \"\\ud800\", \"color\": \"#ffffff\"}\n"); return p; }))
            yield return c;
        foreach (var c in DataClass("parquet garbage", d => { string p = Path.Combine(d, "bad.parquet"); Garbage(p); return p; }))
            yield return c;
        foreach (var c in DataClass("data path is a folder", d => { string p = Path.Combine(d, "folder.jsonl"); Directory.CreateDirectory(p); return p; }))
            yield return c;

        // Training configs (YAML).
        foreach (var c in ConfigClass("yaml unclosed [", d => ValidYaml(d) + "\nbetas: [0.9, 0.999\n")) yield return c;
        foreach (var c in ConfigClass("yaml unknown key", d => ValidYaml(d) + "\nlearning_rate: 1\n")) yield return c;
        foreach (var c in ConfigClass("yaml wrong type", d => ValidYaml(d).Replace("lr: 1.0e-3", "lr: fast"))) yield return c;
        foreach (var c in ConfigClass("yaml not a mapping", d => "- a\n- b\n")) yield return c;
        foreach (var c in ConfigClass("yaml complex key", d => ValidYaml(d) + "\n? [a]\n: 1\n")) yield return c;
        foreach (var c in ConfigVerbs())
            yield return new Case(c.Verb, "config file missing", d => c.Run(d, Path.Combine(d, "none.yaml")));

        // PEFT adapters.
        foreach (var (cls, mutate) in new (string, Action<string>)[]
        {
            ("adapter folder missing", a => Directory.Delete(a, true)),
            ("adapter_config.json truncated", a => Truncate(Path.Combine(a, "adapter_config.json"))),
            ("adapter weights truncated", a => Truncate(Path.Combine(a, "adapter_model.safetensors"))),
        })
        {
            yield return new Case("convert merge", cls, d => (["convert", "merge", LoraBase, Adapter(d, mutate), Path.Combine(d, "out")], null, Path.Combine(d, "out")));
            yield return new Case("chat", cls, d => (["chat", Model(d), "--adapter", Adapter(d, mutate), "--prompt", "hi", "--max-new-tokens", "2", "--device", "cpu"], null, null));
        }

        // Training checkpoints.
        yield return new Case("convert adapter", "a work dir instead of a checkpoint", d =>
        {
            Directory.CreateDirectory(Path.Combine(d, "work", "iter_2"));
            File.WriteAllText(Path.Combine(d, "work", "iter_2", "state.json"), "{}");
            return (["convert", "adapter", Path.Combine(d, "work"), Path.Combine(d, "out")], null, Path.Combine(d, "out"));
        });
        yield return new Case("convert adapter", "checkpoint missing", d => (["convert", "adapter", Path.Combine(d, "iter_9"), Path.Combine(d, "out")], null, Path.Combine(d, "out")));
        yield return new Case("convert adapter", "state.json truncated", d =>
        {
            Directory.CreateDirectory(Path.Combine(d, "iter_2"));
            File.WriteAllText(Path.Combine(d, "iter_2", "state.json"), "{\"format_version\": ");
            return (["convert", "adapter", Path.Combine(d, "iter_2"), Path.Combine(d, "out")], null, Path.Combine(d, "out"));
        });

        // Messages, templates and stdin.
        yield return new Case("render-template", "messages truncated", d =>
        {
            string p = Path.Combine(d, "m.json");
            File.WriteAllText(p, "[{\"role\": \"user\", ");
            return (["render-template", "--tokenizer", TinyModel, "--messages", p, "--prompt-template", "qwen_chat"], null, null);
        });
        yield return new Case("render-template", "messages not an array", d =>
        {
            string p = Path.Combine(d, "m.json");
            File.WriteAllText(p, "{\"role\": \"user\"}");
            return (["render-template", "--tokenizer", TinyModel, "--messages", p, "--prompt-template", "qwen_chat"], null, null);
        });
        foreach (var (cls, template) in new (string, string)[]
        {
            ("chat_template syntax error", "{% if messages %}{{ messages[0].content }"),
            ("chat_template recursive macro", "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}"),
            ("chat_template huge range", "{% for i in range(10000000000) %}{{ i }}{% endfor %}"),
            ("chat_template huge repetition", "{{ 'ab' * 9999999999 }}"),
            ("chat_template divisibleby(0)", "{{ 4 is divisibleby(0) }}"),
        })
            yield return new Case("render-template", cls, d =>
            {
                string m = Model(d, m => Edit(Path.Combine(m, "tokenizer_config.json"), "\"tokenizer_class\"",
                    $"\"chat_template\": {System.Text.Json.JsonSerializer.Serialize(template)}, \"tokenizer_class\""));
                return (["render-template", "--tokenizer", m, "--messages", GoodMessages(d)], null, null);
            });
        yield return new Case("tokenize", "stdin not a JSON array of strings", d => (["tokenize", "--tokenizer", TinyModel], "{\"a\": ", null));

        // Options.
        foreach (var (verb, args) in new (string, string[])[]
        {
            ("train", ["train", "cfg.yaml", "--wrok-dir", "x"]),
            ("check-dataset", ["check-dataset", "--max-lenght", "3"]),
            ("log-dataset", ["log-dataset", "--show", "txt", "--data", "x.jsonl", "--format", "colors", "--tokenizer", TinyModel, "--template", "qwen_chat", "--max-length", "8"]),
            ("tokenize", ["tokenize", "--tokeniser", "x"]),
            ("render-template", ["render-template", "--tokenizer", "x", "--mesages", "m.json"]),
            ("chat", ["chat", "model", "--max-new-token", "3"]),
            ("convert merge", ["convert", "merge", "a", "b", "c", "--max-shard-size", "2G"]),
            ("convert quantize", ["convert", "quantize", "a", "b", "--quant_type", "nf4"]),
            ("convert adapter", ["convert", "adapter", "a", "b", "--dtype", "float7"]),
            ("train", ["train", "cfg.yaml", "--seed", "x"]),
        })
            yield return new Case(verb, "bad option", d => (args, null, null));

        // The environment: the output's parent is a file.
        yield return new Case("convert quantize", "output under a file", d =>
        {
            string f = Path.Combine(d, "a-file");
            File.WriteAllText(f, "");
            return (["convert", "quantize", TinyModel, Path.Combine(f, "out")], null, Path.Combine(f, "out"));
        });
        yield return new Case("convert merge", "output under a file", d =>
        {
            string f = Path.Combine(d, "a-file");
            File.WriteAllText(f, "");
            return (["convert", "merge", LoraBase, Path.Combine(LoraBase, "adapter"), Path.Combine(f, "out")], null, Path.Combine(f, "out"));
        });
    }

    static string GoodLine => File.ReadLines(Path.Combine(TinyModel, "colorist.jsonl")).First();
}
