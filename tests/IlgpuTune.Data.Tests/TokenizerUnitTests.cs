using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Tests;

public class TokenizerUnitTests
{
    // A tiny byte-level BPE whose merges are given in one of the two tokenizer.json forms.
    static HfTokenizer Tiny(bool pairForm)
    {
        var vocab = new Dictionary<string, int>();
        foreach (char c in ByteLevel.ByteToChar) vocab[c.ToString()] = vocab.Count;
        string[][] merges = [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"]];
        foreach (var m in merges) vocab[m[0] + m[1]] = vocab.Count;
        string mergesJson = string.Join(",", merges.Select(m => pairForm
            ? System.Text.Json.JsonSerializer.Serialize(m)
            : System.Text.Json.JsonSerializer.Serialize(m[0] + " " + m[1])));
        string json = $$$"""
            {"version":"1.0","added_tokens":[{"id":{{{vocab.Count}}},"content":"<|x|>","special":true,"lstrip":false,"rstrip":true,"normalized":false,"single_word":false}],
             "normalizer":{"type":"NFC"},
             "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
             "post_processor":null,"decoder":{"type":"ByteLevel"},
             "model":{"type":"BPE","vocab":{{{System.Text.Json.JsonSerializer.Serialize(vocab)}}},"merges":[{{{mergesJson}}}]}}
            """;
        return HfTokenizer.FromJson(json);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MergesInBothForms(bool pairForm)
    {
        var t = Tiny(pairForm);
        var ids = t.Encode("hello<|x|>  wow");
        Assert.Equal(["hello", "<|x|>", "w", "o", "w"], ids.Select(i => t.IdToToken(i)));   // rstrip ate the spaces
        Assert.Equal("hello<|x|>wow", t.Decode(ids));
        Assert.Equal("hellowow", t.Decode(ids, skipSpecialTokens: true));
    }

    [Theory]
    [InlineData("e\u0301", "\u00e9")]
    [InlineData("\u212b", "\u00c5")]
    [InlineData("\u1100\u1161\u11a8", "\uac01")]
    [InlineData("a\u0323\u0302", "\u1ead")]
    [InlineData("a\u0302\u0323", "\u1ead")]
    [InlineData("\U0001D400", "\U0001D400")]
    public void NfcComposes(string input, string nfc) => Assert.Equal(nfc, UnicodeNfc.Nfc(input));

    [Fact]
    public void NfdDecomposesAndOrdersMarks() => Assert.Equal("a\u0323\u0302", UnicodeNfc.Nfd("\u1ead"));

    [Fact]
    public void AstralLettersMatchAsOneLetter()
    {
        var spans = new List<(int, int)>();
        OnigRegex.Matches(OnigRegex.Compile(@"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"), "🙂abc 𝐀𝐁 𝟘𝟙𝟚𝟛", spans);
        Assert.Equal([(0, 5), (5, 5), (11, 6), (17, 2)], spans);
    }
}
