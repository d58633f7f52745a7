using IlgpuTune.Data.Templates;

namespace IlgpuTune.Data.Tests;

/// <summary>Turn texts as xtuner/tools/chat.py builds them (v0.2.0).</summary>
public class XtunerChatPromptTests
{
    [Fact]
    public void FirstTurnHasSystem_LaterTurnsStartWithSep()
    {
        var chat = new XtunerChatPrompt(XtunerTemplates.Get("qwen_chat"), "Be brief.");
        Assert.Equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", chat.NextTurn("hi"));
        Assert.Equal("\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n", chat.NextTurn("more"));
        Assert.Equal(2, chat.Round);
        Assert.Equal(["<|im_end|>", "<|endoftext|>"], chat.StopWords);
        chat.Reset();
        Assert.StartsWith("<|im_start|>system\n", chat.NextTurn("again"));
    }

    [Fact]
    public void RoundIsFormattedIntoTheInstruction()
    {
        var chat = new XtunerChatPrompt(XtunerTemplates.Get("chatglm2"));
        Assert.Equal("[Round 1]\n\n问：a\n\n答：", chat.NextTurn("a"));
        Assert.Equal("\n\n[Round 2]\n\n问：b\n\n答：", chat.NextTurn("b"));
    }

    [Fact]
    public void NoTemplate_IsTheTextAsIs()
    {
        var chat = new XtunerChatPrompt(null);
        Assert.Equal("hello", chat.NextTurn("hello"));
        Assert.Equal("again", chat.NextTurn("again"));
        Assert.Empty(chat.StopWords);
    }

    [Fact]
    public void SystemTemplate_FormatsBotName()
    {
        Assert.StartsWith("You are an AI assistant whose name is Ada.\nCapabilities and tools that Ada can possess.",
            XtunerChatPrompt.SystemFromTemplate("moss_sft", "Ada"));
        Assert.Equal(XtunerTemplates.System["colorist"], XtunerChatPrompt.SystemFromTemplate("colorist"));
        Assert.Throws<KeyNotFoundException>(() => XtunerChatPrompt.SystemFromTemplate("nope"));
    }

    [Fact]
    public void SystemWithoutSystemSlot_IsAnError()
    {
        Assert.Contains("minicpm", Assert.Throws<ArgumentException>(() => new XtunerChatPrompt(XtunerTemplates.Get("minicpm"), "x")).Message);
        Assert.Throws<ArgumentException>(() => new XtunerChatPrompt(null, "x"));
    }
}
