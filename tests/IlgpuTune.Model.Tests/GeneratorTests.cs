using IlgpuTune.Core;
using IlgpuTune.Model.Generation;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>The generation loop on the tiny Llama fixture (with its adapter), on the CPU path.</summary>
public sealed class GeneratorTests : IDisposable
{
    readonly Device _device = Device.Create("cpu");
    readonly CausalLM _model;
    static readonly int[] Prompt = [1, 17, 99, 3, 64];

    public GeneratorTests()
    {
        string dir = Repo.Fixture("tiny/llama");
        _model = ModelLoader.Load(dir, _device);
        PeftAdapter.Load(Path.Combine(dir, "adapter"), _model);
    }

    public void Dispose()
    {
        _model.Dispose();
        _device.Dispose();
    }

    // Token i prints as one letter: enough text to test stop words.
    static string Letters(IReadOnlyList<int> ids) => string.Concat(ids.Select(i => (char)('a' + i % 26)));

    GenerationResult Run(GenerationOptions options, int seed = 0, Action<string>? onText = null)
    {
        using var g = new Generator(_model, Letters);
        return g.Generate(Prompt, options, new Random(seed), onText);
    }

    [Fact]
    public void Greedy_EqualsArgmaxOfTheUncachedForwardAtEveryStep()
    {
        var result = Run(new GenerationOptions { MaxNewTokens = 6 });
        Assert.Equal(StopReason.MaxNewTokens, result.Reason);
        Assert.Equal(6, result.Tokens.Length);
        var seq = Prompt.ToList();
        foreach (int token in result.Tokens)
        {
            using (var logits = _model.Forward([.. seq], 1, seq.Count))
            {
                var all = logits.ToFloatArray();
                Assert.Equal(Sampling.Argmax(all.AsSpan(all.Length - _model.Config.VocabSize)), token);
            }
            seq.Add(token);
        }
        Assert.Equal(Letters(result.Tokens), result.Text);
    }

    [Fact]
    public void Sampling_IsDeterministicForASeed()
    {
        var options = new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5f, TopK = 40, TopP = 0.95f };
        Assert.Equal(Run(options, seed: 5).Tokens, Run(options, seed: 5).Tokens);
        Assert.NotEqual(Run(options, seed: 5).Tokens, Run(options, seed: 6).Tokens);
    }

    [Fact]
    public void StopsOnEos_KeepingItInTokensButNotInText()
    {
        var free = Run(new GenerationOptions { MaxNewTokens = 8 }).Tokens;
        int eos = free[3];
        int at = Array.IndexOf(free, eos);
        var result = Run(new GenerationOptions { MaxNewTokens = 8, EosTokenIds = [eos] });
        Assert.Equal(StopReason.EosToken, result.Reason);
        Assert.Equal(free[..(at + 1)], result.Tokens);
        Assert.Equal(Letters(free[..at]), result.Text);
    }

    [Fact]
    public void StopsOnStopWord_AndStreamsTheAnswerWithoutIt()
    {
        var free = Run(new GenerationOptions { MaxNewTokens = 8 }).Tokens;
        string text = Letters(free);
        string stop = text[3..5];
        int end = text.IndexOf(stop, StringComparison.Ordinal) + stop.Length;
        var streamed = new List<string>();
        var result = Run(new GenerationOptions { MaxNewTokens = 8, StopWords = [stop] }, onText: streamed.Add);
        Assert.Equal(StopReason.StopWord, result.Reason);
        Assert.Equal(free[..end], result.Tokens);
        Assert.Equal(text[..(end - stop.Length)], result.Text);
        Assert.Equal(result.Text, string.Concat(streamed));
    }

    [Fact]
    public void NextTurn_ContinuesTheConversationAsIfFedFromScratch()
    {
        var options = new GenerationOptions { MaxNewTokens = 4 };
        int[] turn2 = [5, 6, 7];
        using var chat = new Generator(_model, Letters, initialCapacity: 4);
        var first = chat.Generate(Prompt, options, new Random(0));
        var second = chat.Generate(turn2, options, new Random(0));
        Assert.Equal([.. Prompt, .. first.Tokens, .. turn2, .. second.Tokens], chat.Tokens);

        using var fresh = new Generator(_model, Letters);
        var once = fresh.Generate([.. Prompt, .. first.Tokens, .. turn2], options, new Random(0));
        Assert.Equal(once.Tokens, second.Tokens);

        // The same conversation handed over whole (as a re-rendered chat template would) reuses the cache and agrees.
        int[] conversation = [.. Prompt, .. first.Tokens, .. turn2];
        var again = chat.GenerateFromConversation(conversation, options, new Random(0));
        Assert.Equal(second.Tokens, again.Tokens);
        Assert.Equal([.. conversation, .. again.Tokens], chat.Tokens);
        int[] edited = [.. Prompt, 9, 9];
        Assert.Equal(fresh.GenerateFromConversation(edited, options, new Random(0)).Tokens,
            chat.GenerateFromConversation(edited, options, new Random(0)).Tokens);

        chat.Reset();
        Assert.Empty(chat.Tokens);
        Assert.Equal(first.Tokens, chat.Generate(Prompt, options, new Random(0)).Tokens);
    }

    [Fact]
    public void StopsAtMaxPositionEmbeddings_AndRefusesAPromptThatDoesNotFit()
    {
        int max = _model.Config.MaxPositionEmbeddings; // 128 (llama3 rope scaling does not stretch it)
        using var g = new Generator(_model, Letters);
        Assert.Equal(max, g.MaxPositions);
        var result = g.Generate(Prompt, new GenerationOptions { MaxNewTokens = 1000 }, new Random(0));
        Assert.Equal(StopReason.MaxPositionEmbeddings, result.Reason);
        Assert.Equal(max, g.Tokens.Count);
        Assert.Equal(max - Prompt.Length, result.Tokens.Length);
        g.Reset();
        var e = Assert.Throws<ArgumentException>(() => g.Generate(Enumerable.Range(1, max + 1).ToArray(), new GenerationOptions(), new Random(0)));
        Assert.Contains($"max_position_embeddings is {max}", e.Message);
    }

    [Fact]
    public void Cancel_EndsTheAnswerAfterTheCurrentToken()
    {
        using var g = new Generator(_model, Letters);
        using var cts = new CancellationTokenSource();
        var result = g.Generate(Prompt, new GenerationOptions { MaxNewTokens = 50 }, new Random(0), _ => cts.Cancel(), cts.Token);
        Assert.Equal(StopReason.Cancelled, result.Reason);
        Assert.Single(result.Tokens);
    }

    [Fact]
    public void EosTokenIds_AsTransformersGenerate_GenerationConfigThenConfigThenTokenizer()
    {
        using var dir = new TempDir();
        var config = _model.Config; // eos_token_id 2
        Assert.Equal([2], GenerationConfig.EosTokenIds(dir.Path, config, tokenizerEos: 9));
        File.WriteAllText(dir.File("generation_config.json"), """{"eos_token_id": [5, 7]}""");
        Assert.Equal([5, 7], GenerationConfig.EosTokenIds(dir.Path, config, tokenizerEos: 9));
        File.WriteAllText(dir.File("generation_config.json"), """{"eos_token_id": 6}""");
        Assert.Equal([6], GenerationConfig.EosTokenIds(dir.Path, config, tokenizerEos: 9));
        File.WriteAllText(dir.File("generation_config.json"), """{"do_sample": true}""");
        Assert.Equal([2], GenerationConfig.EosTokenIds(dir.Path, config, tokenizerEos: 9));
        File.WriteAllText(dir.File("generation_config.json"), """{"eos_token_id": "x"}""");
        Assert.Contains("eos_token_id must be an integer", Assert.Throws<InvalidDataException>(() => GenerationConfig.EosTokenIds(dir.Path, config, 9)).Message);
    }
}
