using System.Diagnostics;
using System.Text;
using IlgpuTune.Core;
using IlgpuTune.Data.Templates;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;
using Xunit.Abstractions;

namespace IlgpuTune.Cli.Tests;

public sealed class ChatTests(ITestOutputHelper log, TinyChatModelFixture fixture) : IClassFixture<TinyChatModelFixture>
{
    const string QwenTurn = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n";

    TinyChatModel Tiny => fixture.Model;

    // The answer by the book: uncached forward, argmax, until an EOS/stop token or the limit; decoded without it.
    string GreedyAnswer(string promptText, bool withAdapter, int maxNewTokens)
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Tiny.ModelDir, device);
        if (withAdapter)
            foreach (var l in PeftAdapter.Load(Tiny.AdapterDir, model)) // Forward is the training forward: take its LoRA dropout out
                l.AttachLora(l.Lora! with { Dropout = 0 }, l.LoraA!.Clone(), l.LoraB!.Clone());
        var ids = Tiny.Tokenizer.Encode(promptText, addSpecialTokens: true).ToList();
        int prompt = ids.Count;
        int[] stops = [Tiny.Tokenizer.TokenToId("<|im_end|>")!.Value, Tiny.Tokenizer.TokenToId("<|endoftext|>")!.Value];
        for (int step = 0; step < maxNewTokens; step++)
        {
            using var logits = model.Forward([.. ids], 1, ids.Count);
            var all = logits.ToFloatArray();
            int next = Sampling.Argmax(all.AsSpan(all.Length - model.Config.VocabSize));
            if (stops.Contains(next)) break;
            ids.Add(next);
        }
        return Tiny.Tokenizer.Decode(ids[prompt..]);
    }

    (int Code, string Stdout, string Stderr) RunCli(params string[] args) => CliRunner.Run(log, args);

    [Fact]
    public void OneShot_PrintsTheGreedyAnswerOfModelPlusAdapter()
    {
        string expected = GreedyAnswer(QwenTurn, withAdapter: true, maxNewTokens: 10);
        Assert.NotEqual(expected, GreedyAnswer(QwenTurn, withAdapter: false, maxNewTokens: 10)); // the adapter matters
        var (code, stdout, _) = RunCli("chat", Tiny.ModelDir, "--adapter", Tiny.AdapterDir, "--prompt-template", "qwen_chat",
            "--system", "Be brief.", "--prompt", "hello", "--temperature", "0", "--max-new-tokens", "10", "--device", "cpu");
        Assert.Equal(0, code);
        Assert.Equal(expected + "\n", stdout);
    }

    [Fact]
    public void OneShot_SamplingIsSeeded_AndStopWordsCutTheAnswer()
    {
        string[] args = ["chat", Tiny.ModelDir, "--prompt-template", "qwen_chat", "--prompt", "hello", "--temperature", "1.2",
            "--top-k", "0", "--top-p", "1", "--max-new-tokens", "16", "--device", "cpu"];
        var a = RunCli([.. args, "--seed", "7"]);
        var b = RunCli([.. args, "--seed", "7"]);
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Stdout, b.Stdout);
        string answer = a.Stdout[..^1];
        Assert.True(answer.Length >= 4, $"answer too short for the test: '{answer}'");
        string stop = answer.Substring(2, 2);
        var cut = RunCli([.. args, "--seed", "7", "--stop-words", stop]);
        Assert.Equal(answer[..answer.IndexOf(stop, StringComparison.Ordinal)] + "\n", cut.Stdout);
    }

    [Fact]
    public void BadArguments_AreErrorsNamingTheProblem()
    {
        var (code, _, stderr) = RunCli("chat", Tiny.ModelDir, "--prompt-template", "nope", "--prompt", "x", "--device", "cpu");
        Assert.Equal(2, code);
        Assert.Contains("unknown prompt template 'nope'", stderr);
        (code, _, stderr) = RunCli("chat", Tiny.ModelDir, "--system", "a", "--system-template", "alpaca", "--prompt", "x");
        Assert.Equal(2, code);
        Assert.Contains("not both", stderr);
    }

    [Fact]
    public void Interactive_ResetStartsOver_ExitQuits()
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Tiny.ModelDir, device);
        var options = new GenerationOptions { MaxNewTokens = 6, EosTokenIds = [Tiny.Tokenizer.EosTokenId!.Value], StopWords = ["<|im_end|>"] };
        using var session = new ChatSession(model, Tiny.Tokenizer, new XtunerChatPrompt(XtunerTemplates.Get("qwen_chat"), "Be brief."),
            options, seed: 0);
        var output = new StringWriter();
        int code = session.Run(new StringReader("hello\n\nmore\nlines\n\nRESET\n\nhello\n\nEXIT\n\nnever read\n\n"), output);
        log.WriteLine(output.ToString());
        Assert.Equal(0, code);
        var turns = output.ToString().Split(ChatSession.InputPrompt);
        Assert.Equal(6, turns.Length); // "", hello, more+lines, RESET, hello, EXIT
        Assert.Equal("Log: History responses have been removed!\n", turns[3]);
        Assert.Equal(turns[1], turns[4]); // a fresh first turn gives the same answer
        Assert.Equal("Log: Exit!\n", turns[5]);
        // chat.py's rule: a conversation of max_new_tokens tokens or more starts over.
        Assert.EndsWith("\nRemove the memory of history responses, since it exceeds the length limitation 6.\n", turns[1]);
    }

    [Fact]
    public void CtrlC_EndsTheAnswer_AndTheConversationGoesOn()
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Tiny.ModelDir, device);
        var options = new GenerationOptions { MaxNewTokens = 40, Temperature = 0, EosTokenIds = [] };
        using var session = new ChatSession(model, Tiny.Tokenizer, new XtunerChatPrompt(XtunerTemplates.Get("qwen_chat")), options, seed: 0);
        Assert.False(session.CancelAnswer()); // at the prompt: nothing to cancel, Ctrl-C quits
        int pieces = 0;
        var result = session.Ask("hello", _ =>
        {
            if (++pieces == 2) Assert.True(session.CancelAnswer());
        });
        Assert.Equal(StopReason.Cancelled, result.Reason);
        Assert.True(result.Tokens.Length < 40);
        Assert.NotEqual(StopReason.Cancelled, session.Ask("more", _ => { }).Reason); // the next turn answers in full
    }

    [Fact]
    public void AutoTemplate_FollowsTheTokenizerThenTheModelType()
    {
        var config = ModelConfig.Load(Tiny.ModelDir);
        Assert.Equal("qwen_chat", IlgpuTune.Embedding.LocalModel.AutoTemplate(config, Tiny.Tokenizer));
        // As transformers' generate: config.json's eos (<|endoftext|>) when there is no generation_config.json; the
        // tokenizer's <|im_end|> ends an answer as the qwen_chat template's stop word.
        Assert.Equal([Tiny.Tokenizer.TokenToId("<|endoftext|>")!.Value], ChatCommands.EosTokenIds(Tiny.ModelDir, config, Tiny.Tokenizer));
    }
}

public sealed class TinyChatModelFixture : IDisposable
{
    public TinyChatModel Model { get; } = new();

    public void Dispose() => Model.Dispose();
}
