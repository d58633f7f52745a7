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
