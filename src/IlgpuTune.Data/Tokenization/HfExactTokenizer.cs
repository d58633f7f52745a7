using System.Buffers;
using Microsoft.ML.Tokenizers;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// Our HF-exact tokenizers as Microsoft.ML.Tokenizers tokenizers, so .NET code written against that API can use them:
/// EncodeToIds, EncodeToTokens, CountTokens and Decode give exactly the ids and text of ITokenizer.Encode (no special
/// tokens added, as Encode's default) and ITokenizer.Decode. Normalization and pre-tokenization are steps of the
/// tokenizer's own pipeline, so the considerNormalization / considerPreTokenization flags do not change the result, and
/// no normalized text is returned. Token offsets are not tracked (each EncodedToken's Offset is empty), so encoding up to a
/// token budget (maxTokenCount, GetIndexByTokenCount) is refused rather than guessed.
/// </summary>
public abstract class HfExactTokenizer : Tokenizer, ITokenizer
{
    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        var ids = Ids(text, textSpan, settings, out int chars);
        var tokens = new List<EncodedToken>(ids.Count);
        foreach (int id in ids) tokens.Add(new EncodedToken(id, IdToToken(id) ?? "", default));
        return new EncodeResults<EncodedToken> { Tokens = tokens, CharsConsumed = chars };
    }

    protected override EncodeResults<int> EncodeToIds(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings) =>
        new() { Tokens = Ids(text, textSpan, settings, out int chars), CharsConsumed = chars };

    protected override int CountTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings) =>
        Ids(text, textSpan, settings, out _).Count;

    protected override int GetIndexByTokenCount(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings, bool fromEnd,
        out string? normalizedText, out int tokenCount) =>
        throw new NotSupportedException($"{GetType().Name} does not track token offsets, so it cannot cut text at a token count");

    public override string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: false);

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        var list = ids as IReadOnlyCollection<int> ?? ids.ToList();
        string text = Decode(list, skipSpecialTokens: false);
        if (text.Length > destination.Length)
        {
            (idsConsumed, charsWritten) = (0, 0);
            return OperationStatus.DestinationTooSmall;
        }
        text.CopyTo(destination);
        (idsConsumed, charsWritten) = (list.Count, text.Length);
        return OperationStatus.Done;
    }

    List<int> Ids(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings, out int charsConsumed)
    {
        string s = text ?? textSpan.ToString();
        var ids = new List<int>(s.Length / 3 + 4);
        EncodeTo(s, ids);
        if (ids.Count > settings.MaxTokenCount)
            throw new NotSupportedException(
                $"{GetType().Name} does not track token offsets, so it cannot stop at {settings.MaxTokenCount} of {ids.Count} tokens");
        charsConsumed = s.Length;
        return ids;
    }

    public abstract int[] Encode(string text, bool addSpecialTokens = false);
    public abstract void EncodeTo(string text, List<int> ids);
    public abstract string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false);
    public abstract string? IdToToken(int id);
    public abstract bool IsSpecial(int id);
    public abstract int? TokenToId(string token);
    public abstract int VocabSize { get; }
    public abstract TokenizerConfig Config { get; }
    public abstract int? BosTokenId { get; }
    public abstract int? EosTokenId { get; }
    public abstract int? PadTokenId { get; }
}
