using System.Text.Json;
using BenchmarkDotNet.Attributes;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Benchmarks.Data;

/// <summary>
/// Tokenization throughput on the parity corpus (tests/IlgpuTune.Data.Tests/Fixtures/tokenizer-corpus.json), one
/// operation = the whole corpus, as tools/tokenizers/make_expected_ids.py --bench times HF tokenizers
/// (hf-tokenizers-bench.json): single thread = encode per string, parallel = all cores over the strings (encode_batch).
/// Needs the real tokenizers in .cache/tokenizers (tests/IlgpuTune.Data.Tests/fetch-tokenizers.sh).
/// </summary>
[MemoryDiagnoser]
[SimpleJob(warmupCount: 3, iterationCount: 15)]
public class TokenizeBench
{
    private ITokenizer _tok = null!;
    private string[] _corpus = [];

    [Params("qwen3", "llama3", "llama2")]
    public string Tokenizer { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        string root = RepoRoot();
        _tok = Tokenizers.FromDirectory(Path.Combine(root, ".cache", "tokenizers", Tokenizer));
        _corpus = JsonSerializer.Deserialize<string[]>(File.ReadAllText(
            Path.Combine(root, "tests", "IlgpuTune.Data.Tests", "Fixtures", "tokenizer-corpus.json")))!;
    }

    [Benchmark(Baseline = true)]
    public int SingleThread()
    {
        int n = 0;
        foreach (string t in _corpus) n += _tok.Encode(t).Length;
        return n;
    }

    [Benchmark]
    public int Parallel()
    {
        var counts = new int[_corpus.Length];
        System.Threading.Tasks.Parallel.For(0, _corpus.Length, i => counts[i] = _tok.Encode(_corpus[i]).Length);
        return counts.Sum();
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "IlgpuTune.sln"))) return d.FullName;
        return Environment.GetEnvironmentVariable("ILGPUTUNE_REPO") ?? throw new InvalidOperationException("repo root not found; set ILGPUTUNE_REPO");
    }
}
