using System.Text;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// The SentencePiece .model path against sentencepiece 0.1.97 itself, on a tiny BPE model trained with Llama-2's options
/// plus USER_DEFINED pieces (tiny-sp-bpe.model and expected-sp-ids.json, made by tools/tokenizers/make_sp_model.py).
/// </summary>
public class SentencePieceTests
{
    static readonly string[] Corpus = Fixtures.Json("tokenizer-corpus.json").EnumerateArray().Select(e => e.GetString()!).ToArray();
    static readonly SentencePieceModelTokenizer Tok = SentencePieceModelTokenizer.FromModel(File.ReadAllBytes(Fixtures.Path("tiny-sp-bpe.model")));

    [Fact]
    public void IdsAndDecodeMatchSentencePiece()
    {
        var fx = Fixtures.Json("expected-sp-ids.json");
        Assert.Equal(fx.GetProperty("vocab_size").GetInt32(), Tok.VocabSize);
        Assert.Equal(fx.GetProperty("bos_id").GetInt32(), Tok.BosTokenId);
        Assert.Equal(fx.GetProperty("eos_id").GetInt32(), Tok.EosTokenId);
        var failures = new StringBuilder();
        foreach (var row in fx.GetProperty("rows").EnumerateArray())
        {
            int i = row.GetProperty("index").GetInt32();
            var expected = Fixtures.Ints(row.GetProperty("ids"));
            var actual = Tok.Encode(Corpus[i]);
            if (!expected.AsSpan().SequenceEqual(actual))
                failures.AppendLine($"corpus[{i}] ids\n  expected {string.Join(" ", expected.Select(Tok.IdToToken))}\n  actual   {string.Join(" ", actual.Select(Tok.IdToToken))}");
            string decoded = row.GetProperty("decoded").GetString()!;
            if (Tok.Decode(expected) != decoded)
                failures.AppendLine($"corpus[{i}] decode\n  expected {System.Text.Json.JsonSerializer.Serialize(decoded)}\n  actual   {System.Text.Json.JsonSerializer.Serialize(Tok.Decode(expected))}");
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }

    [Fact]
    public void UserDefinedPiecesAreAtomicAndSpecial()
    {
        int start = Tok.TokenToId("<|im_start|>")!.Value;
        Assert.Equal(SentencePieceModelTokenizer.PieceType.UserDefined, Tok.TypeOf(start));
        Assert.Contains(start, Tok.Encode("x<|im_start|>y"));
        Assert.Equal("xy", Tok.Decode(Tok.Encode("x<|im_start|>y"), skipSpecialTokens: true));
    }

    [Fact]
    public void ExplicitSpecialTokensFromTokenizerConfig()
    {
        // added_tokens_decoder makes "<s>" (a CONTROL piece that sentencepiece reads as text) and a new id atomic, as HF does.
        var cfg = TokenizerConfig.Parse("""
            {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true, "add_eos_token": true,
             "added_tokens_decoder": {"1": {"content": "<s>", "special": true}, "2": {"content": "</s>", "special": true},
                                      "700": {"content": "<|tool|>", "special": true}}}
            """);
        var tok = SentencePieceModelTokenizer.FromModel(File.ReadAllBytes(Fixtures.Path("tiny-sp-bpe.model")), cfg);
        Assert.Equal(701, tok.VocabSize);
        var ids = tok.Encode("a<s>b<|tool|>c", addSpecialTokens: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(2, ids[^1]);
        Assert.Contains(1, ids[1..]);
        Assert.Contains(700, ids);
        Assert.Equal("<s>a<s>b<|tool|>c</s>", tok.Decode(ids));
        Assert.Equal("abc", tok.Decode(ids, skipSpecialTokens: true));
    }

    [Fact]
    public void DirectoryLoaderPicksTheModelWhenThereIsNoTokenizerJson()
    {
        string dir = Directory.CreateTempSubdirectory("sp-").FullName;
        try
        {
            File.Copy(Fixtures.Path("tiny-sp-bpe.model"), Path.Combine(dir, "tokenizer.model"));
            Assert.IsType<SentencePieceModelTokenizer>(Tokenizers.FromDirectory(dir));
            File.WriteAllText(Path.Combine(dir, "tokenizer.model"), "not a model");
            Assert.ThrowsAny<Exception>(() => Tokenizers.FromDirectory(dir));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
