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
    int? TokenToId(string token);
    int VocabSize { get; }
    TokenizerConfig Config { get; }
    int? BosTokenId { get; }
    int? EosTokenId { get; }
    int? PadTokenId { get; }
}
