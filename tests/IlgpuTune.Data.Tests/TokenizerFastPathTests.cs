using System.Text;
using System.Text.Json.Nodes;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// The byte-level fast path (regex split → UTF-8 bytes → allocation-free merges) against the step-by-step pipeline it
/// replaces, on random text of every kind the fast path special-cases: CJK, surrogate pairs, combining marks (NFC),
/// digits, newlines, added tokens. The step-by-step run is forced by nesting the same pre-tokenizer in a Sequence.
/// </summary>
public class TokenizerFastPathTests
{
    static readonly string[] Atoms =
    [
        "the", " quick", "Brown", " fox's", "don't", "  ", "\n", "\r\n", "\t", "123", "4567", "3.14", "!!", "...", "{}", "=>",
        "中文", "你好，世界", "数据集", "。", "，", "😀", "𝔘𝔫𝔦", "🇫🇷", "é", "e\u0301", "a\u0308\u0301", "한국어", "\u1100\u1161\u11A8",
        "ﬁ", "Ω", "\u212B", "<|im_start|>", "<|im_end|>", "<|endoftext|>", " ", "x", "Ünïcödé", "ـــ", "עברית", "\u00A0", "\u3000",
    ];

    static string RandomText(Random rand)
    {
        var sb = new StringBuilder();
        int n = rand.Next(1, 40);
        for (int i = 0; i < n; i++) sb.Append(Atoms[rand.Next(Atoms.Length)]);
        return sb.ToString();
    }

    static HfTokenizer StepByStep(string name)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(RealTokenizers.Dir(name), "tokenizer.json")))!;
        var pre = root["pre_tokenizer"]!.DeepClone();
        root["pre_tokenizer"] = new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(pre) };
        return HfTokenizer.FromJson(root.ToJsonString());
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    public void FastPathEqualsTheStepByStepPipeline(string name)
    {
        var fast = RealTokenizers.Get(name);
        var slow = StepByStep(name);
        var rand = new Random(20);
        for (int i = 0; i < 400; i++)
        {
            string s = RandomText(rand);
            Assert.Equal(slow.Encode(s), fast.Encode(s));
        }
        string longCjk = string.Concat(Enumerable.Range(0, 400).Select(i => (char)(0x4E00 + i * 37 % 20000)));
        Assert.Equal(slow.Encode(longCjk), fast.Encode(longCjk));   // a piece of 1,200 bytes: the rented-buffer path
    }

    [Fact]
    public void EncodeBatchKeepsInputOrder()
    {
        var tok = RealTokenizers.Get("qwen3");
        var rand = new Random(3);
        var texts = Enumerable.Range(0, 300).Select(_ => RandomText(rand)).ToArray();
        var batch = tok.EncodeBatch(texts);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(tok.Encode(texts[i]), batch[i]);
        var special = tok.EncodeBatch(texts, addSpecialTokens: true, maxDegreeOfParallelism: 2);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(tok.Encode(texts[i], addSpecialTokens: true), special[i]);
        Assert.Empty(tok.EncodeBatch([]));
    }

    [Fact]
    public void NfcQuickCheckAgreesWithTheFullPath()
    {
        // Strings that must change under NFC (decomposed forms, singletons, jamo) and ones that must not.
        Assert.Equal("é", UnicodeNfc.Nfc("e\u0301"));
        Assert.Equal("\u00C5", UnicodeNfc.Nfc("\u212B"));
        Assert.Equal("\uAC01", UnicodeNfc.Nfc("\u1100\u1161\u11A8"));
        Assert.Equal("\uAC01", UnicodeNfc.Nfc("\uAC00\u11A8"));
        Assert.Equal("\u1100\u1161\u11A8", UnicodeNfc.Nfd("\uAC01"));
        Assert.Equal("é́".Length - 1, UnicodeNfc.Nfc("é́").Length);   // é + a second acute
        Assert.Equal("é́", UnicodeNfc.Nfc("é́"));
        Assert.Equal("😀𝔘", UnicodeNfc.Nfc("😀𝔘"));
        // Already-NFC text of the common scripts is returned as it is, without the full path.
        foreach (string s in new[] { "中文，数据集。", "plain ascii", "한국어", "Ω ﬁ é Ünïcödé", "Ελληνικά", "Русский" })
            Assert.Same(s, UnicodeNfc.Nfc(s));
    }
}
