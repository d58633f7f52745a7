using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Tests;

/// <summary>
/// Malformed tokenizer.json / tokenizer_config.json / tokenizer.model files end in one InvalidDataException naming the
/// file and what is wrong (the classes issue 13's fuzzing found: negative or 2^31-1 ids, null or short merges, a huge
/// added_tokens_decoder key, an added token without content, JSON errors without the file name).
/// </summary>
public class TokenizerValidationTests
{
    const string Vocab = """{"a":0,"b":1,"ab":2}""";

    static string Json(string vocab = Vocab, string merges = """["a b"]""", string added = "[]", string post = "null") =>
        $$$"""{"added_tokens":{{{added}}},"post_processor":{{{post}}},"model":{"type":"BPE","vocab":{{{vocab}}},"merges":{{{merges}}}}}""";

    static InvalidDataException Bad(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromJson(json, source: "/m/tokenizer.json"));
        Assert.StartsWith("/m/tokenizer.json: ", e.Message);
        Assert.Contains(expected, e.Message);
        return e;
    }

    [Fact]
    public void TheMinimalTokenizerLoads()
    {
        var t = HfTokenizer.FromJson(Json());
        Assert.Equal([2, 0], t.Encode("aba"));
    }

    [Fact]
    public void IdsOutOfRangeAreRefused()
    {
        Bad(Json(vocab: """{"a":-1,"b":1,"ab":2}"""), "vocab entry 'a': -1 is not a token id");
        Bad(Json(vocab: """{"a":2147483647,"b":1,"ab":2}"""), "2147483647 is not a token id");
        Bad(Json(vocab: """{"a":1.5,"b":1,"ab":2}"""), "1.5 is not a token id");
        Bad(Json(added: """[{"id":2147483647,"content":"<x>","special":true}]"""), "added token id: 2147483647");
        Bad(Json(added: """[{"id":-5,"content":"<x>"}]"""), "added token id: -5");
    }

    [Fact]
    public void MalformedMergesAreRefused()
    {
        Bad(Json(merges: "[null]"), "merge #0");
        Bad(Json(merges: """[["a"]]"""), "merge #0 [\"a\"] is not a pair of strings");
        Bad(Json(merges: """[["a", null]]"""), "is not a pair of strings");
        Bad(Json(merges: """["ab"]"""), "merge #0 'ab' has no space");
        Bad(Json(merges: """["a c"]"""), "refers to a token missing from the vocab");
        Bad(Json(merges: "7"), "\"merges\" must be a list");
    }

    [Fact]
    public void IncompleteAddedTokensAndPostProcessorsAreRefused()
    {
        Bad(Json(added: """[{"id":3}]"""), "missing \"content\"");
        Bad(Json(added: """[{"id":3,"content":null}]"""), "\"content\" must be a string");
        Bad(Json(added: """[7]"""), "expected an object with \"id\"");
        Bad(Json(post: """{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}}],"special_tokens":{}}"""), "'<s>'");
        Bad(Json(post: """{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}}],"special_tokens":{"<s>":{"ids":[99]}}}"""), "token id 99");
        Bad(Json(post: """{"type":"BertProcessing","cls":["[CLS]"],"sep":["[SEP]",1]}"""), "[token, id] pair");
    }

    [Fact]
    public void SyntaxErrorsAndWrongShapesNameTheFile()
    {
        Bad("{\"model\": ", "");
        Bad("[]", "");
        Bad("""{"model":{"type":"BPE","vocab":{"\ud800":0},"merges":[]}}""", "");   // invalid UTF-16 in a key
        Bad("""{"model":{"type":"BPE","vocab":{},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"("},"behavior":"Isolated"}}""", "");
        Bad("""{"model":{"type":"BPE","vocab":{},"merges":[]},"decoder":{"type":"Strip","content":"","start":1,"stop":0}}""", "\"content\" must not be empty");
        var ns = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromJson("""{"model":{"type":"WordPiece"}}""", source: "/m/tokenizer.json"));
        Assert.StartsWith("/m/tokenizer.json: ", ns.Message);
    }

    [Fact]
    public void TokenizerConfigErrorsNameTheFile()
    {
        static void BadConfig(string json, string expected)
        {
            var e = Assert.Throws<InvalidDataException>(() => TokenizerConfig.Parse(json, "/m/tokenizer_config.json"));
            Assert.StartsWith("/m/tokenizer_config.json: ", e.Message);
            Assert.Contains(expected, e.Message);
        }
        BadConfig("{\"bos_token\": ", "");
        BadConfig("""{"added_tokens_decoder":{"99999999999999999999":{"content":"<x>"}}}""", "added_tokens_decoder key '99999999999999999999' is not a token id");
        BadConfig("""{"added_tokens_decoder":{"-3":{"content":"<x>"}}}""", "'-3' is not a token id");
        BadConfig("""{"added_tokens_decoder":{"5":{"special":true}}}""", "missing \"content\"");
        BadConfig("""{"chat_template":[{"name":"default"}]}""", "missing \"template\"");
        BadConfig("""{"chat_template":[{"name":"default","template":5}]}""", "\"template\" must be a string");
        BadConfig("[1]", "expected a JSON object");
        Assert.Equal(5, TokenizerConfig.Parse("""{"added_tokens_decoder":{"5":{"content":"<x>"}}}""").AddedTokensDecoder[0].Id);
    }

    [Fact]
    public void ADownloadedChatTemplatesSyntaxErrorNamesItsFile()
    {
        string dir = Directory.CreateTempSubdirectory("tokcfg-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), Json());
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}{{ m.content }"}""");
            var tok = HfTokenizer.FromDirectory(dir);
            var e = Assert.Throws<Templates.Jinja.TemplateException>(() => new Datasets.ChatTemplateEncoder(tok, tok.Config.ChatTemplate!, 64));
            Assert.StartsWith(Path.Combine(dir, "tokenizer_config.json") + ": chat template: line 1", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void AMissingOrFileModelFolderIsNamed()
    {
        string file = Path.GetTempFileName();
        try
        {
            Assert.Contains("is a file", Assert.Throws<DirectoryNotFoundException>(() => Tokenizers.FromDirectory(file)).Message);
            Assert.Contains("no such folder", Assert.Throws<DirectoryNotFoundException>(() => Tokenizers.FromDirectory(file + ".nope")).Message);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void CorruptSentencePieceModelsNameTheFile()
    {
        byte[] good = File.ReadAllBytes(Fixtures.Path("tiny-sp-bpe.model"));
        var rng = new Random(13);
        int unexpected = 0;
        for (int i = 0; i < 300; i++)
        {
            var bad = (byte[])good.Clone();
            int flips = 1 + rng.Next(8);
            for (int k = 0; k < flips; k++) bad[rng.Next(bad.Length)] ^= (byte)(1 << rng.Next(8));
            if (rng.Next(4) == 0) Array.Resize(ref bad, rng.Next(bad.Length));
            try
            {
                SentencePieceModelTokenizer.FromModel(bad, source: "/m/tokenizer.model").Encode("hello world");
            }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException)
            {
                Assert.StartsWith("/m/tokenizer.model: ", e.Message);
            }
            catch (Exception)
            {
                unexpected++;
            }
        }
        Assert.Equal(0, unexpected);
        Assert.StartsWith("/m/tokenizer.model: ", Assert.Throws<InvalidDataException>(() => SentencePieceModelTokenizer.FromModel([0x0a, 0xff], source: "/m/tokenizer.model")).Message);
    }
}
