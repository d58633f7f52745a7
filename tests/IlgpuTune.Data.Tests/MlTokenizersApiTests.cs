using System.Buffers;
using IlgpuTune.Data.Tokenization;
using Microsoft.ML.Tokenizers;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// The HF-exact tokenizers through Microsoft.ML.Tokenizers' public Tokenizer API: the same ids and text as transformers
/// (expected-ids.json on the real Qwen3 / Llama-3 / Llama-2 files; expected-sp-ids.json for sentencepiece).
/// </summary>
public class MlTokenizersApiTests
{
    static readonly string[] Corpus = Fixtures.Json("tokenizer-corpus.json").EnumerateArray().Select(e => e.GetString()!).ToArray();

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    [InlineData("llama2")]
    public void RealTokenizersEncodeCountAndDecodeAsTransformers(string name)
    {
        Tokenizer tok = RealTokenizers.Get(name);
        var rows = Fixtures.Json("expected-ids.json").GetProperty("tokenizers").GetProperty(name).GetProperty("rows");
        foreach (var row in rows.EnumerateArray())
        {
            string text = Corpus[row.GetProperty("index").GetInt32()];
            var ids = Fixtures.Ints(row.GetProperty("ids"));
            Assert.Equal(ids, tok.EncodeToIds(text));
            Assert.Equal(ids, tok.EncodeToIds(text.AsSpan()));
            Assert.Equal(ids.Length, tok.CountTokens(text));
            var tokens = tok.EncodeToTokens(text, out string? normalized);
            Assert.Null(normalized);
            Assert.Equal(ids, tokens.Select(t => t.Id));
            Assert.Equal(ids.Select(id => ((HfTokenizer)tok).IdToToken(id)), tokens.Select(t => t.Value));
            string decoded = row.GetProperty("decoded").GetString()!;
            Assert.Equal(decoded, tok.Decode(ids));
            var buffer = new char[decoded.Length];
            Assert.Equal(OperationStatus.Done, tok.Decode(ids, buffer, out int idsConsumed, out int written));
            Assert.Equal((ids.Length, decoded), (idsConsumed, new string(buffer, 0, written)));
            if (decoded.Length > 0)
                Assert.Equal(OperationStatus.DestinationTooSmall, tok.Decode(ids, new char[decoded.Length - 1], out _, out _));
        }
    }

    [Fact]
    public void SentencePieceModelEncodesAndDecodesAsSentencePiece()
    {
        Tokenizer tok = SentencePieceModelTokenizer.FromModel(File.ReadAllBytes(Fixtures.Path("tiny-sp-bpe.model")));
        foreach (var row in Fixtures.Json("expected-sp-ids.json").GetProperty("rows").EnumerateArray())
        {
            string text = Corpus[row.GetProperty("index").GetInt32()];
            var ids = Fixtures.Ints(row.GetProperty("ids"));
            Assert.Equal(ids, tok.EncodeToIds(text));
            Assert.Equal(ids.Length, tok.CountTokens(text));
            Assert.Equal(row.GetProperty("decoded").GetString()!, tok.Decode(ids));
        }
    }

    [Fact]
    public void TokenBudgetsAreRefusedNotGuessed()
    {
        Tokenizer tok = RealTokenizers.Get("qwen3");
        Assert.Throws<NotSupportedException>(() => tok.EncodeToIds("one two three four", 2, out _, out _));
        Assert.Throws<NotSupportedException>(() => tok.GetIndexByTokenCount("one two three four", 2, out _, out _));
        Assert.Equal(tok.EncodeToIds("one two"), tok.EncodeToIds("one two", 100, out _, out int chars));
        Assert.Equal("one two".Length, chars);
    }
}
