using System.Diagnostics;
using System.Text;
using IlgpuTune.Cli;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.IO;
using LLama;
using LLama.Common;

namespace IlgpuTune.Deploy.Tests;

// The real Llama 3 and Qwen3 tokenizers (npm, tests/IlgpuTune.Data.Tests/fetch-tokenizers.sh) as GGUF vocab-only files:
// llama.cpp, told the pre-tokenizer by the name we derive from the split regex, must split text exactly as we do.
public sealed class GgufRealTokenizerTests : IDisposable
{
    readonly TestKit.TempDir _dir = new();

    const string Text = "Hello world! It's 2024: don't panic.\n\n  Ünïcödé café, naïve 日本語のテキスト, 12345678 tokens;\tTABS\r\n" +
        "    indented code() { return x+1; } 🙂👍🏽 —«quotes»— ";

    [Theory]
    [InlineData("llama3", "llama-bpe")]
    [InlineData("qwen3", "qwen2")]
    public void LlamaCppSplitsTextAsWeDo(string name, string pre)
    {
        string dir = Path.Combine(Fetch(), name);
        var tokenizer = HfTokenizer.FromDirectory(dir);
        var vocab = GgufVocab.FromDirectory(dir, tokenizer.VocabSize);
        Assert.Equal(pre, vocab.Pre);
        string gguf = _dir.File(name + ".gguf");
        // Vocab only: the hyperparameters llama.cpp reads before the vocab, and no tensors.
        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str("llama")),
            new("llama.context_length", GgufValue.U32(4096)), new("llama.embedding_length", GgufValue.U32(64)),
            new("llama.block_count", GgufValue.U32(1)), new("llama.feed_forward_length", GgufValue.U32(128)),
            new("llama.attention.head_count", GgufValue.U32(4)), new("llama.attention.layer_norm_rms_epsilon", GgufValue.F32(1e-5)),
        };
        meta.AddRange(GgufConvert.TokenizerMetadata(vocab));
        using (var s = File.Create(gguf)) GgufWriter.Write(s, meta, [], _ => default);
        using var weights = LLamaWeights.LoadFromFile(new ModelParams(gguf) { VocabOnly = true, GpuLayerCount = 0 });
        var theirs = weights.Tokenize(Text, true, true, Encoding.UTF8).Select(t => (int)t).ToArray();
        Assert.Equal(tokenizer.Encode(Text, addSpecialTokens: true), theirs);
        string special = name == "qwen3" ? "<|im_start|>user\nhi<|im_end|>" : "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>";
        Assert.Equal(tokenizer.Encode(special), weights.Tokenize(special, false, true, Encoding.UTF8).Select(t => (int)t).ToArray());
    }

    static string Fetch()
    {
        string script = Path.Combine(TestKit.Repo.Root, "tests", "IlgpuTune.Data.Tests", "fetch-tokenizers.sh");
        using var p = Process.Start(new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"fetch-tokenizers.sh failed (needs npm): {stderr}");
        return stdout.Trim();
    }

    public void Dispose() => _dir.Dispose();
}

// A SentencePiece BPE model trained with Llama 2's options (tests/IlgpuTune.Data.Tests/Fixtures/tiny-sp-bpe.model) as a
// "llama" GGUF vocab (pieces, scores, types): llama.cpp's SentencePiece tokenizer must give our ids on the tokenizer corpus.
public sealed class GgufSentencePieceTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    readonly TestKit.TempDir _dir = new();

    [Fact]
    public void LlamaCppSplitsTheCorpusAsWeDo()
    {
        string fixtures = Path.Combine(TestKit.Repo.Root, "tests", "IlgpuTune.Data.Tests", "Fixtures");
        File.Copy(Path.Combine(fixtures, "tiny-sp-bpe.model"), _dir.File("tokenizer.model"));
        var tokenizer = SentencePieceModelTokenizer.FromDirectory(_dir.Path);
        var vocab = GgufVocab.FromDirectory(_dir.Path, tokenizer.VocabSize);
        Assert.Equal(("llama", "default"), (vocab.Model, vocab.Pre));
        string gguf = _dir.File("sp.gguf");
        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str("llama")),
            new("llama.context_length", GgufValue.U32(4096)), new("llama.embedding_length", GgufValue.U32(64)),
            new("llama.block_count", GgufValue.U32(1)), new("llama.feed_forward_length", GgufValue.U32(128)),
            new("llama.attention.head_count", GgufValue.U32(4)), new("llama.attention.layer_norm_rms_epsilon", GgufValue.F32(1e-5)),
        };
        meta.AddRange(GgufConvert.TokenizerMetadata(vocab));
        using (var s = File.Create(gguf)) GgufWriter.Write(s, meta, [], _ => default);
        using var weights = LLamaWeights.LoadFromFile(new ModelParams(gguf) { VocabOnly = true, GpuLayerCount = 0 });
        var corpus = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(fixtures, "tokenizer-corpus.json")))
            .RootElement.EnumerateArray().Select(e => e.GetString()!).ToList();
        // Plain text must match. Texts with USER_DEFINED pieces (<|im_start|>...) differ by design of llama.cpp's SentencePiece
        // path: it adds the "▁" prefix after every special piece where sentencepiece adds it once at the start; no GGUF
        // field changes that, so those texts are only counted.
        var user = Enumerable.Range(0, tokenizer.VocabSize).Where(i => tokenizer.TypeOf(i) == SentencePieceModelTokenizer.PieceType.UserDefined)
            .Select(i => tokenizer.IdToToken(i)!).ToList();
        var differ = corpus.Where(text => !tokenizer.Encode(text, addSpecialTokens: true)
            .SequenceEqual(weights.Tokenize(text, true, false, Encoding.UTF8).Select(t => (int)t))).ToList();
        string Show(IEnumerable<int> ids) => string.Join(" ", ids.Select(i => tokenizer.IdToToken(i)));
        var plain = differ.Where(t => !user.Any(u => t.Contains(u, StringComparison.Ordinal))).ToList();
        Assert.True(plain.Count == 0, $"{plain.Count} of {corpus.Count} corpus texts tokenize differently:\n" + string.Join("\n", plain.Select(t =>
            $"{System.Text.Json.JsonSerializer.Serialize(t)}\n  ours  {Show(tokenizer.Encode(t, addSpecialTokens: true))}\n  llama {Show(weights.Tokenize(t, true, false, Encoding.UTF8).Select(x => (int)x))}")));
        output.WriteLine($"{corpus.Count - differ.Count} of {corpus.Count} corpus texts equal; differing (user-defined pieces): " +
            string.Join(" | ", differ.Select(t => System.Text.Json.JsonSerializer.Serialize(t))));
        Assert.True(differ.Count <= 2, $"{differ.Count} texts with user-defined pieces differ");
    }

    public void Dispose() => _dir.Dispose();
}
