// A tokenizer folder as llama.cpp's GGUF tokenizer.ggml.* fields, the way llama.cpp's convert_hf_to_gguf.py fills them:
// - tokenizer.json with a byte-level BPE model -> "gpt2": tokens in id order, merges "a b", token types (added special
//   tokens CONTROL, other added tokens USER_DEFINED, ids the tokenizer lacks "[PADn]" UNUSED), and tokenizer.ggml.pre
//   naming the pre-tokenizer's split regex. The converter finds `pre` by hashing the tokenization of a probe text; we read
//   the regex itself and name it, and refuse a regex llama.cpp has no name for (it would tokenize differently).
// - tokenizer.model (SentencePiece BPE) -> "llama": pieces, scores and piece types; tokenizer_config's added tokens
//   override their ids with score -1000 (CONTROL when special, else USER_DEFINED).
// Special ids, add_bos/add_eos (read off an encoding with special tokens) and the chat template come with both.
using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

public sealed record GgufVocab(string Model, string Pre, string[] Tokens, int[] TokenTypes, float[]? Scores, string[]? Merges,
    int? BosTokenId, int? EosTokenId, int? PadTokenId, int? UnknownTokenId, bool AddBosToken, bool AddEosToken, string? ChatTemplate)
{
    // llama.cpp token types (llama_token_type / gguf TokenType).
    public const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    // tokenizer.json Split regexes llama.cpp implements, by the name tokenizer.ggml.pre gives them (llama-vocab.cpp).
    private static readonly Dictionary<string, string> PreByRegex = new(StringComparer.Ordinal)
    {
        [@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"] = "llama-bpe",
        [@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"] = "qwen2",
    };

    /// <summary>The vocab of the tokenizer in <paramref name="dir"/>, padded to <paramref name="vocabSize"/> (config.json's).</summary>
    public static GgufVocab FromDirectory(string dir, int vocabSize)
    {
        // Llama 2 / Mistral folders carry both files: the tokenizer.json is then a byte-fallback BPE made from the
        // tokenizer.model, and llama.cpp wants the SentencePiece pieces and scores.
        string json = Path.Combine(dir, "tokenizer.json"), model = Path.Combine(dir, "tokenizer.model");
        ITokenizer tokenizer = File.Exists(model) && (!File.Exists(json) || ByteFallback(json))
            ? SentencePieceModelTokenizer.FromDirectory(dir)
            : Tokenizers.FromDirectory(dir);
        if (tokenizer.VocabSize > vocabSize)
            throw new InvalidDataException($"{dir}: the tokenizer has {tokenizer.VocabSize} tokens, more than config.json's vocab_size {vocabSize}");
        var tokens = new string[vocabSize];
        var types = new int[vocabSize];
        float[]? scores = null;
        string[]? merges = null;
        string type, pre;
        int? unk = null;
        if (tokenizer is HfTokenizer hf)
        {
            (pre, merges) = ReadBpe(json);
            type = "gpt2";
            var added = hf.AddedTokens.ToDictionary(t => t.Id);
            for (int i = 0; i < vocabSize; i++)
            {
                string? token = hf.IdToToken(i);
                tokens[i] = token ?? $"[PAD{i}]";
                types[i] = token is null ? Unused : added.TryGetValue(i, out var a) ? a.Special ? Control : UserDefined : Normal;
            }
        }
        else
        {
            var sp = (SentencePieceModelTokenizer)tokenizer;
            (type, pre) = ("llama", "default");
            scores = new float[vocabSize];
            var added = sp.Config.AddedTokensDecoder.ToDictionary(t => t.Id);
            for (int i = 0; i < vocabSize; i++)
            {
                string? token = sp.IdToToken(i);
                tokens[i] = token ?? $"[PAD{i}]";
                if (added.TryGetValue(i, out var a))
                    (types[i], scores[i]) = (a.Special ? Control : UserDefined, -1000f);
                else if (token is null)
                    (types[i], scores[i]) = (Unused, -1000f);
                else
                    (types[i], scores[i]) = ((int)sp.TypeOf(i), sp.ScoreOf(i));
                if (types[i] == Unknown) unk ??= i;
            }
        }
        // What encoding with special tokens adds around the text (BOS first, EOS last) is what llama.cpp must add.
        var plain = tokenizer.Encode("a");
        var special = tokenizer.Encode("a", addSpecialTokens: true);
        bool addBos = special.Length > plain.Length && tokenizer.BosTokenId is { } bos && special[0] == bos;
        bool addEos = special.Length > plain.Length && tokenizer.EosTokenId is { } eos && special[^1] == eos;
        return new GgufVocab(type, pre, tokens, types, scores, merges, tokenizer.BosTokenId, tokenizer.EosTokenId, tokenizer.PadTokenId,
            unk, addBos, addEos, tokenizer.Config.ChatTemplate);
    }

    // (tokenizer.ggml.pre, merges "a b") of a byte-level BPE tokenizer.json.
    private static (string Pre, string[] Merges) ReadBpe(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var root = doc.RootElement;
        var model = root.GetProperty("model");
        var merges = model.TryGetProperty("merges", out var m) && m.ValueKind == JsonValueKind.Array
            ? m.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()!
                : string.Join(' ', x.EnumerateArray().Select(p => p.GetString()))).ToArray()
            : [];
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new NotSupportedException($"{path}: a BPE with byte_fallback (SentencePiece-style, as Llama 2's) is written from its " +
                "tokenizer.model; put tokenizer.model next to it");
        return (PreOf(root, path), merges);
    }

    private static bool ByteFallback(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return doc.RootElement.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.Object
            && m.TryGetProperty("byte_fallback", out var b) && b.ValueKind == JsonValueKind.True;
    }

    private static string PreOf(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var p) || p.ValueKind != JsonValueKind.Object)
            throw new NotSupportedException($"{path}: no pre_tokenizer; llama.cpp's gpt2 vocab needs a byte-level one");
        string type = p.GetProperty("type").GetString() ?? "";
        if (type == "ByteLevel" && UsesRegex(p)) return "gpt-2";
        if (type == "Sequence")
        {
            var parts = p.GetProperty("pretokenizers").EnumerateArray().ToList();
            if (parts is [var split, var byteLevel] && split.GetProperty("type").GetString() == "Split"
                && byteLevel.GetProperty("type").GetString() == "ByteLevel" && !UsesRegex(byteLevel)
                && split.GetProperty("pattern").TryGetProperty("Regex", out var regex)
                && PreByRegex.TryGetValue(regex.GetString() ?? "", out var name))
                return name;
        }
        throw new NotSupportedException($"{path}: pre_tokenizer {JsonFields.Short(p)} is not one llama.cpp names " +
            "(expected ByteLevel, or the Split regex of Llama 3 or Qwen2 with ByteLevel)");
    }

    private static bool UsesRegex(JsonElement byteLevel) =>
        !byteLevel.TryGetProperty("use_regex", out var u) || u.ValueKind != JsonValueKind.False;
}
