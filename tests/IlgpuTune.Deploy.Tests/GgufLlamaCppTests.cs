using IlgpuTune.Cli;
using IlgpuTune.Core;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.IO;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;
using Xunit.Abstractions;

namespace IlgpuTune.Deploy.Tests;

// Our GGUF files read by a real consumer, llama.cpp: the tokenizer must split text as ours does, and the model must pick
// the same greedy tokens as our engine on the original HF folder (f16/bf16: all of them; q8_0/q4_0: the share stated).
public sealed class GgufLlamaCppTests(ITestOutputHelper output) : IDisposable
{
    readonly TestKit.TempDir _dir = new();
    const string Text = "the cat sat on the mat, is it? 42 <|im_start|>user\nhello<|im_end|>";
    const int NewTokens = 12;

    public static TheoryData<string> Fixtures() => [.. TinyModels.Fixtures];

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void F16AndBf16GiveOurTokensAndGreedyAnswers(string name)
    {
        string model = TinyModels.Prepare(name, _dir.Path);
        foreach (var type in new[] { GgufOutType.F16, GgufOutType.BF16 })
        {
            string gguf = Convert(model, type);
            var tokenizer = HfTokenizer.FromDirectory(model);
            using var cpp = new LlamaCpp(gguf);
            Assert.Equal(tokenizer.Encode(Text), cpp.Tokenize(Text, addSpecial: true));
            var prompt = tokenizer.Encode("the cat sat on");
            var ours = Greedy(model, null, prompt);
            var theirs = cpp.Greedy(prompt, NewTokens);
            output.WriteLine($"{name} {type}: ours {string.Join(' ', ours)} / llama.cpp {string.Join(' ', theirs)}");
            int k = Enumerable.Range(0, NewTokens).FirstOrDefault(i => ours[i] != theirs[i], -1);
            if (k < 0) continue;
            // Rounding the weights to 16 bits may flip a near tie, never a clear choice: at the first difference our fp32
            // logits for the two tokens must be within 16-bit rounding noise.
            var logits = LastLogits(model, [.. prompt, .. ours[..k]]);
            float gap = logits[ours[k]] - logits[theirs[k]], spread = logits.Max() - logits.Min();
            output.WriteLine($"  first difference at token {k}: our logit gap {gap:G3} of a spread {spread:G3}");
            Assert.True(gap < 0.01f * spread, $"{name} {type}: token {k} differs with a logit gap of {gap} (spread {spread})");
        }
    }

    [Fact]
    public void EmbeddedTinyDefaultLoadsWithItsTokenizerAndAnswers()
    {
        string model = TinyModels.EmbeddedDefault;
        string gguf = Convert(model, GgufOutType.F16);
        var tokenizer = HfTokenizer.FromDirectory(model);
        using var cpp = new LlamaCpp(gguf);
        const string text = "<|im_start|>user\nWhat color is the sky, and the sea? 1234 ümlaut<|im_end|>\n<|im_start|>assistant\n";
        Assert.Equal(tokenizer.Encode(text), cpp.Tokenize(text, addSpecial: true));
        var prompt = tokenizer.Encode(text);
        Assert.Equal(Greedy(model, null, prompt), cpp.Greedy(prompt, NewTokens));
        var meta = GgufFile.Read(gguf).Metadata;
        Assert.Equal("qwen2", meta["tokenizer.ggml.pre"].Value);
        Assert.Equal(558u, meta["tokenizer.ggml.eos_token_id"].Value);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void MergedAdapterGivesTheAdapterOnBaseAnswers(string name)
    {
        string model = TinyModels.Prepare(name, _dir.Path), adapter = TinyModels.Adapter(name);
        string gguf = _dir.File(name + "-lora.gguf");
        var summary = GgufConvert.Run(model, gguf, GgufOutType.F16, adapter);
        Assert.NotEmpty(summary.MergedModules);
        var prompt = HfTokenizer.FromDirectory(model).Encode("the cat sat on");
        var withAdapter = Greedy(model, adapter, prompt);
        using var cpp = new LlamaCpp(gguf);
        Assert.Equal(withAdapter, cpp.Greedy(prompt, NewTokens));
        Assert.NotEqual(Greedy(model, null, prompt), withAdapter); // the adapter changes the answer, so the merge is seen
    }

    [Theory]
    [InlineData("llama", GgufOutType.Q8_0, 0.9)]
    [InlineData("qwen2", GgufOutType.Q8_0, 0.9)]
    [InlineData("internlm2", GgufOutType.Q8_0, 0.9)]
    [InlineData("llama", GgufOutType.Q4_0, 0.3)]
    [InlineData("qwen2", GgufOutType.Q4_0, 0.3)]
    public void QuantizedTop1Agreement(string name, GgufOutType type, double atLeast)
    {
        string model = TinyModels.Prepare(name, _dir.Path);
        string gguf = Convert(model, type);
        var prompt = HfTokenizer.FromDirectory(model).Encode("the cat sat on");
        var ours = Greedy(model, null, prompt, 32);
        using var cpp = new LlamaCpp(gguf);
        // Teacher forcing on our greedy sequence: at each step, does llama.cpp's top-1 equal ours?
        var argmax = cpp.Argmaxes([.. prompt, .. ours[..^1]]);
        int agree = Enumerable.Range(0, ours.Length).Count(i => argmax[prompt.Length - 1 + i] == ours[i]);
        double share = (double)agree / ours.Length;
        output.WriteLine($"{name} {type}: top-1 agreement {agree}/{ours.Length} = {share:P0}");
        Assert.True(share >= atLeast, $"{name} {type}: top-1 agreement {share:P0} < {atLeast:P0}");
    }

    string Convert(string model, GgufOutType type)
    {
        string gguf = _dir.File($"{Path.GetFileName(model)}-{type}.gguf");
        GgufConvert.Run(model, gguf, type);
        return gguf;
    }

    static float[] LastLogits(string model, int[] ids)
    {
        using var device = Device.Create("cpu");
        using var lm = ModelLoader.Load(model, device);
        using var cache = new KvCache(lm.Config, lm.Device, ids.Length);
        using var logits = lm.ForwardCached(ids, cache);
        return logits.ToFloatArray();
    }

    static int[] Greedy(string model, string? adapter, int[] prompt, int n = NewTokens)
    {
        using var device = Device.Create("cpu");
        using var lm = ModelLoader.Load(model, device);
        if (adapter is not null) PeftAdapter.Load(adapter, lm);
        using var generator = new Generator(lm);
        return generator.Generate(prompt, new GenerationOptions { MaxNewTokens = n, Temperature = 0 }, new Random(0)).Tokens;
    }

    public void Dispose() => _dir.Dispose();
}
