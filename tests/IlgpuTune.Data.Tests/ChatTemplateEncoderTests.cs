using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;

namespace IlgpuTune.Data.Tests;

/// <summary>Training encode with the model's own chat_template (--template auto).</summary>
public class ChatTemplateEncoderTests
{
    static List<Conversation> Conversations() =>
        DatasetReader.Read(Fixtures.Path("xtuner-conversations.json"), DatasetFormat.Conversation).Conversations;

    // Replies and inputs the template would trim, or turns without input, render differently from XTuner by design.
    static bool Plain(Conversation c) => c.Turns.All(t => t.Input is not null && t.Input == t.Input.Trim() && t.Output == t.Output?.Trim());

    [Fact]
    public void Llama3OwnTemplateEqualsXtunerLlama3Chat()
    {
        var tok = RealTokenizers.Get("llama3");
        var own = new ChatTemplateEncoder(tok, ChatTemplates.Resolve("auto", tok.Config)!, 512);
        var xtuner = new XtunerEncoder(tok, XtunerTemplates.Get("llama3_chat"), 512);
        var plain = Conversations().Where(Plain).ToList();
        Assert.True(plain.Count >= 3);
        foreach (var c in plain)
        {
            var a = own.Encode(c);
            var b = xtuner.Encode(c);
            Assert.Equal(b.InputIds, a.InputIds);
            Assert.Equal(b.Labels, a.Labels);
        }
    }

    [Fact]
    public void Qwen3SupervisesEachReplyThroughImEnd()
    {
        var tok = RealTokenizers.Get("qwen3");
        var enc = new ChatTemplateEncoder(tok, ChatTemplates.Resolve("auto", tok.Config)!, 512);
        var c = Conversations().First(c => c.Turns.Count == 2 && c.Turns.All(t => t.OutputWithLoss));
        var s = enc.Encode(c);
        string full = ChatTemplates.Render(Templates.Jinja.JinjaTemplate.Parse(tok.Config.ChatTemplate!),
            ChatTemplateEncoder.Messages(c).Select(m => m.Message).ToList(), tok.Config, false);
        Assert.Equal(full.TrimEnd('\n'), tok.Decode(s.InputIds));
        // Supervised runs: the earlier reply as rendered, the last with the empty think block Qwen3 adds after the last query.
        var runs = new List<string>();
        for (int i = 0; i < s.Labels.Length;)
        {
            int j = i;
            while (j < s.Labels.Length && (s.Labels[j] >= 0) == (s.Labels[i] >= 0)) j++;
            if (s.Labels[i] >= 0) runs.Add(tok.Decode(s.Labels[i..j]));
            i = j;
        }
        Assert.Equal([c.Turns[0].Output + "<|im_end|>", "<think>\n\n</think>\n\n" + c.Turns[1].Output + "<|im_end|>"], runs);
    }

    [Fact]
    public void ATemplateThatCannotStartWithAReplyIsAnErrorNamingTheRecord()
    {
        var tok = RealTokenizers.Get("qwen3");
        var enc = new ChatTemplateEncoder(tok, ChatTemplates.Resolve("auto", tok.Config)!, 512);
        var noInput = Conversations().First(c => c.Turns.Any(t => t.Input is null));
        var e = Assert.Throws<DatasetException>(() => enc.Encode(noInput));
        Assert.Equal(noInput.Source, Assert.Single(e.Errors).Location);
    }
}
