namespace IlgpuTune.Data.Tokenization;

/// <summary>What the data pipeline needs from a tokenizer.</summary>
public interface ITokenizer
{
    /// <summary>Ids of <paramref name="text"/>; special/added tokens inside the text are always recognized.</summary>
    int[] Encode(string text, bool addSpecialTokens = false);

    /// <summary>Appends the ids of <paramref name="text"/> (no post-processor) to <paramref name="ids"/>.</summary>
    void EncodeTo(string text, List<int> ids);

    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false);

    string? IdToToken(int id);
    /// <summary>An added/control token flagged special (skipped by Decode(skipSpecialTokens: true)).</summary>
    bool IsSpecial(int id);
    int? TokenToId(string token);
    int VocabSize { get; }
    TokenizerConfig Config { get; }
    int? BosTokenId { get; }
    int? EosTokenId { get; }
    int? PadTokenId { get; }
}

public static class Tokenizers
{
    /// <summary>DIR/tokenizer.json when present (HF fast tokenizer), else DIR/tokenizer.model (SentencePiece BPE).</summary>
    public static ITokenizer FromDirectory(string dir)
    {
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException(File.Exists(dir) ? $"{dir} is a file; expected a model or tokenizer folder" : $"{dir}: no such folder");
        if (File.Exists(Path.Combine(dir, "tokenizer.json"))) return HfTokenizer.FromDirectory(dir);
        if (File.Exists(Path.Combine(dir, "tokenizer.model"))) return SentencePieceModelTokenizer.FromDirectory(dir);
        throw new FileNotFoundException($"{dir}: no tokenizer.json or tokenizer.model");
    }

    /// <summary>The files that define the tokenizer in DIR (for cache keys).</summary>
    public static IReadOnlyList<string> Files(string dir) =>
        new[] { "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json" }
            .Select(f => Path.Combine(dir, f)).Where(File.Exists).ToList();
}
