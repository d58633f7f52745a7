using System.Text;
using System.Text.Json;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// Every XTuner PROMPT_TEMPLATE (v0.2.0) over the conversation fixtures, against template_map_fn + encode_fn run in Python
/// with transformers' tokenizer.encode per piece (expected-xtuner-encode.json).
/// </summary>
public class XtunerEncodeTests
{
    static readonly JsonElement Expected = Fixtures.Json("expected-xtuner-encode.json");

    static List<Conversation> Conversations()
    {
        var errors = new List<DatasetError>();
        var convs = Fixtures.Json("xtuner-conversations.json").EnumerateArray()
            .Select((e, i) => DatasetMapFns.Map(new RawRecord(e, $"xtuner-conversations.json[{i}]"), DatasetFormat.Conversation, errors)!)
            .ToList();
        Assert.Empty(errors);
        return convs;
    }

    [Fact]
    public void TemplateStringsAreByteExact()
    {
        var prompt = Expected.GetProperty("prompt_templates");
        Assert.Equal(prompt.EnumerateObject().Select(p => p.Name).Order(), XtunerTemplates.Prompt.Keys.Order());
        foreach (var p in prompt.EnumerateObject())
        {
            var t = XtunerTemplates.Prompt[p.Name];
            string? S(string key) => p.Value.TryGetProperty(key, out var v) ? v.GetString() : null;
            Assert.Equal(S("SYSTEM"), t.System);
            Assert.Equal(S("INSTRUCTION"), t.Instruction);
            Assert.Equal(S("SUFFIX"), t.Suffix);
            Assert.Equal(S("SEP"), t.Sep);
            Assert.Equal(p.Value.TryGetProperty("SUFFIX_AS_EOS", out var se) && se.GetBoolean(), t.SuffixAsEos);
            Assert.Equal(p.Value.TryGetProperty("STOP_WORDS", out var sw) ? sw.EnumerateArray().Select(x => x.GetString()!).ToArray() : [],
                t.StopWords);
        }
        var system = Expected.GetProperty("system_templates");
        Assert.Equal(system.EnumerateObject().Count(), XtunerTemplates.System.Count);
        foreach (var p in system.EnumerateObject()) Assert.Equal(p.Value.GetString(), XtunerTemplates.System[p.Name]);
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    [InlineData("llama2")]
    public void EncodeMatchesXtuner(string name)
    {
        var tok = RealTokenizers.Get(name);
        var convs = Conversations();
        var bosEos = Expected.GetProperty("bos_eos").GetProperty(name);
        var (bos, eos) = XtunerEncoder.BosEos(tok);
        Assert.Equal(Fixtures.Ints(bosEos[0]), bos);
        Assert.Equal(Fixtures.Ints(bosEos[1]), eos);
        var failures = new StringBuilder();
        int n = 0;
        foreach (var c in Expected.GetProperty("cases").EnumerateArray())
        {
            if (c.GetProperty("tokenizer").GetString() != name) continue;
            n++;
            var template = XtunerTemplates.Get(c.GetProperty("template").GetString()!);
            var conv = convs[c.GetProperty("conversation").GetInt32()];
            string label = $"{template.Name} conversation {c.GetProperty("conversation").GetInt32()}";
            // transformers 5.x's LlamaTokenizer no longer follows tokenizer.json for text that starts with a space
            // (expected-ids.json rows 1, 5, 6, 27, 37, 52 carry its differing transformers_ids); XTuner runs on transformers
            // 4.x, whose fast tokenizer is tokenizer.json. Conversation 5's output " spaced output " is such a piece.
            if (name == "llama2" && c.GetProperty("conversation").GetInt32() == 5) continue;
            if (c.TryGetProperty("error", out _))
            {
                var ex = Assert.Throws<DatasetException>(() => new XtunerEncoder(tok, template, 4096).Encode(conv));
                Assert.Contains("has no SYSTEM", ex.Message);
                continue;
            }
            int maxLength = c.GetProperty("max_length").GetInt32();
            var s = new XtunerEncoder(tok, template, maxLength).Encode(conv);
            var ids = Fixtures.Ints(c.GetProperty("input_ids"));
            var labels = Fixtures.Ints(c.GetProperty("labels"));
            if (!ids.AsSpan().SequenceEqual(s.InputIds) || !labels.AsSpan().SequenceEqual(s.Labels))
                failures.AppendLine($"{label} max_length {maxLength}\n  expected ids {string.Join(' ', ids)}\n  actual   ids {string.Join(' ', s.InputIds)}" +
                                    $"\n  expected labels {string.Join(' ', labels)}\n  actual   labels {string.Join(' ', s.Labels)}");
        }
        Assert.True(n > 300, $"only {n} cases for {name}");
        Assert.True(failures.Length == 0, failures.ToString());
    }
}
