using System.Text.Json;
using System.Text.RegularExpressions;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// A Hugging Face tokenizer.json (BPE model) evaluated as the Rust `tokenizers` crate does it:
/// added tokens on the raw text, then per remaining segment normalizer → pre_tokenizer → BPE, then the post_processor
/// (only with special tokens). Thread-safe; the BPE word cache is shared.
/// </summary>
public sealed class HfTokenizer : HfExactTokenizer
{
    readonly BpeModel _model;
    readonly TextNormalizer? _normalizer;
    readonly PreTokenizer? _preTokenizer;
    readonly PostProcessor? _post;
    readonly TokenDecoder? _decoder;
    readonly AddedTokenMatcher _rawAdded, _normalizedAdded;
    readonly Dictionary<int, AddedToken> _addedById = [];
    readonly Dictionary<string, int> _addedByContent = new(StringComparer.Ordinal);
    readonly string[] _idToToken;
    readonly Regex? _byteLevelRegex;      // set when the pre-tokenizer is a regex split then byte-level (GPT-2 style)
    readonly bool _byteLevelPrefixSpace;

    public override TokenizerConfig Config { get; }
    public IReadOnlyCollection<AddedToken> AddedTokens => _addedById.Values;
    public override int VocabSize => _idToToken.Length;
    public override int? BosTokenId { get; }
    public override int? EosTokenId { get; }
    public override int? PadTokenId { get; }

    HfTokenizer(JsonElement root, TokenizerConfig config)
    {
        Config = config;
        _model = BpeModel.FromJson(root.Prop("model"));
        _normalizer = root.TryGetProperty("normalizer", out var n) ? TextNormalizer.FromJson(n) : null;
        _preTokenizer = root.TryGetProperty("pre_tokenizer", out var p) ? Tokenization.PreTokenizer.FromJson(p) : null; // ours, not the inherited Tokenizer.PreTokenizer
        _byteLevelRegex = _model.SupportsByteLevel ? ByteLevelRegex(_preTokenizer, out _byteLevelPrefixSpace) : null;
        _decoder = root.TryGetProperty("decoder", out var d) ? TokenDecoder.FromJson(d) : null;
        var added = root.TryGetProperty("added_tokens", out var a) ? a.Array("added_tokens").Select(AddedToken.FromJson).ToList() : [];
        foreach (var t in added)
        {
            _addedById[t.Id] = t;
            _addedByContent[t.Content] = t.Id;
        }
        _rawAdded = new AddedTokenMatcher(added.Where(t => !t.Normalized));
        _normalizedAdded = new AddedTokenMatcher(added.Where(t => t.Normalized), _normalizer is null ? null : _normalizer.Normalize);
        int max = Math.Max(_model.Vocab.Count == 0 ? -1 : _model.Vocab.Values.Max(), added.Count == 0 ? -1 : added.Max(t => t.Id));
        _idToToken = new string[max + 1];
        foreach (var (tok, id) in _model.Vocab) _idToToken[id] = tok;
        foreach (var t in added) _idToToken[t.Id] = t.Content;
        _post = root.TryGetProperty("post_processor", out var pp)
            ? PostProcessor.FromJson(pp, s => TokenToId(s) ?? throw new FormatException($"post_processor token '{s}' is not in the vocab"))
            : null;
        foreach (int id in _post?.Single([]) ?? [])
            if (IdToToken(id) is null) throw new FormatException($"post_processor adds token id {id}, which is neither in the vocab nor an added token");
        BosTokenId = config.BosToken is null ? null : TokenToId(config.BosToken);
        EosTokenId = config.EosToken is null ? null : TokenToId(config.EosToken);
        PadTokenId = config.PadToken is null ? null : TokenToId(config.PadToken);
    }

    // GPT-2-style byte-level pre-tokenization (GPT-2, Llama 3, Qwen...): one regex cutting the text into isolated pieces,
    // each then written as its bytes. Returns that regex (and whether ByteLevel prepends a space), or null for any other
    // pipeline, which then runs step by step.
    static Regex? ByteLevelRegex(PreTokenizer? p, out bool addPrefixSpace)
    {
        addPrefixSpace = false;
        switch (p)
        {
            case ByteLevelPreTokenizer { UseRegex: true } b:
                addPrefixSpace = b.AddPrefixSpace;
                return ByteLevelPreTokenizer.Gpt2;
            case SequencePreTokenizer { Items: [SplitPreTokenizer { Regex: { } r, Behavior: SplitBehavior.Isolated, Invert: false },
                ByteLevelPreTokenizer { UseRegex: false, AddPrefixSpace: false }] }:
                return r;
            default:
                return null;
        }
    }

    /// <summary>Loads DIR/tokenizer.json with DIR/tokenizer_config.json (and chat_template.jinja) when present.</summary>
    public static HfTokenizer FromDirectory(string dir)
    {
        string path = Path.Combine(dir, "tokenizer.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"no tokenizer.json in {dir}", path);
        return FromJson(File.ReadAllText(path), TokenizerConfig.Load(dir), path);
    }

    /// <summary>
    /// Parses and checks a tokenizer.json: anything malformed (bad JSON, a missing or mistyped key, an id out of range, a
    /// merge that is not a pair, an added token without content, a bad regex) is an InvalidDataException naming
    /// <paramref name="source"/>; a well-formed but unsupported component a NotSupportedException naming it.
    /// </summary>
    public static HfTokenizer FromJson(string json, TokenizerConfig? config = null, string source = "tokenizer.json")
    {
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 256 });
            return new HfTokenizer(doc.RootElement, config ?? TokenizerConfig.Empty);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException
            or IndexOutOfRangeException or ArgumentException)   // ArgumentException: a regex that does not compile
        {
            throw new InvalidDataException($"{source}: {e.Message}", e);
        }
        catch (NotSupportedException e)
        {
            throw new NotSupportedException($"{source}: {e.Message}", e);
        }
    }

    public override int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int id) ? id : _model.Vocab.TryGetValue(token, out id) ? id : null;

    public override string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public override bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    public override int[] Encode(string text, bool addSpecialTokens = false)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        EncodeTo(text, ids);
        if (addSpecialTokens && _post is not null) ids = _post.Single(ids);
        return [.. ids];
    }

    public override void EncodeTo(string text, List<int> ids)
    {
        var segments = new List<Segment>();
        _rawAdded.Split(text, 0, segments);
        var normalizedSegments = new List<Segment>();
        var pieces = new List<Piece>();
        foreach (var seg in segments)
        {
            if (seg.TokenId >= 0)
            {
                ids.Add(seg.TokenId);
                continue;
            }
            string norm = _normalizer is null ? seg.Text : _normalizer.Normalize(seg.Text);
            normalizedSegments.Clear();
            _normalizedAdded.Split(norm, seg.Start, normalizedSegments);
            foreach (var ns in normalizedSegments)
            {
                if (ns.TokenId >= 0)
                {
                    ids.Add(ns.TokenId);
                    continue;
                }
                if (_byteLevelRegex is not null)
                {
                    EncodeByteLevel(ns.Text, ids);
                    continue;
                }
                pieces.Clear();
                var piece = new Piece(ns.Text, ns.Start == 0);
                if (_preTokenizer is null) pieces.Add(piece);
                else _preTokenizer.Split(piece, pieces);
                foreach (var pc in pieces) _model.Tokenize(pc.Text, ids);
            }
        }
    }

    // The regex's matches and the gaps between them are the pieces (Split "Isolated"); each goes to the BPE as UTF-8 bytes.
    void EncodeByteLevel(string s, List<int> ids)
    {
        if (_byteLevelPrefixSpace && !s.StartsWith(' ')) s = " " + s;
        int pos = 0;
        if (s.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (var m in _byteLevelRegex!.EnumerateMatches(s))
            {
                if (m.Length == 0) continue;
                if (m.Index > pos) _model.TokenizeByteLevel(s.AsSpan(pos, m.Index - pos), ids);
                _model.TokenizeByteLevel(s.AsSpan(m.Index, m.Length), ids);
                pos = m.Index + m.Length;
            }
        }
        else
        {
            var matches = new List<(int Start, int Length)>();
            OnigRegex.Matches(_byteLevelRegex!, s, matches);
            foreach (var (start, length) in matches)
            {
                if (length == 0) continue;
                if (start > pos) _model.TokenizeByteLevel(s.AsSpan(pos, start - pos), ids);
                _model.TokenizeByteLevel(s.AsSpan(start, length), ids);
                pos = start + length;
            }
        }
        if (pos < s.Length) _model.TokenizeByteLevel(s.AsSpan(pos), ids);
    }

    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id)) continue;
            if (IdToToken(id) is { } t) tokens.Add(t);
        }
        if (_decoder is null) return string.Join(' ', tokens);
        return string.Concat(_decoder.DecodeChain(tokens));
    }
}
