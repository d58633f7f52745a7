using System.Text;
using Google.Protobuf;

namespace IlgpuTune.Data.Tokenization;

/// <summary>
/// A SentencePiece BPE tokenizer.model (Llama-2, InternLM2) evaluated as transformers' slow sentencepiece tokenizers do:
/// the explicit special tokens of tokenizer_config.json's added_tokens_decoder are split out first (with their
/// lstrip/rstrip flags), then every other segment is encoded by sentencepiece's BPE (its own dummy prefix, USER_DEFINED
/// pieces atomic, highest-score merge first with ties to the leftmost pair, byte fallback). Own code rather than
/// Microsoft.ML.Tokenizers 2.0.1, whose SentencePieceTokenizer breaks merge ties from the right and puts the dummy
/// prefix after a leading user-defined piece (ids differ from sentencepiece). Identity normalization only (Llama-2 and
/// InternLM2 use it); other normalizers are rejected. Thread-safe.
/// </summary>
public sealed class SentencePieceModelTokenizer : HfExactTokenizer
{
    /// <summary>sentencepiece_model.proto SentencePiece.Type.</summary>
    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    readonly string[] _idToToken;
    readonly PieceType[] _types;
    readonly float[] _scores;
    readonly Dictionary<string, int> _pieces = new(StringComparer.Ordinal);   // what BPE may produce: normal, user-defined, unused
    readonly Dictionary<string, int> _tokenToId = new(StringComparer.Ordinal);
    readonly Dictionary<char, string[]> _userDefined = [];                    // by first char, longest first
    readonly int[] _byteIds = new int[256];
    readonly bool _byteFallback, _addDummyPrefix, _removeExtraWhitespaces;
    readonly int _unkId;
    readonly HashSet<int> _special = [];
    readonly HashSet<int> _addedIds = [];
    readonly AddedTokenMatcher _added;

    public override TokenizerConfig Config { get; }
    public override int VocabSize => _idToToken.Length;
    public override int? BosTokenId { get; }
    public override int? EosTokenId { get; }
    public override int? PadTokenId { get; }

    SentencePieceModelTokenizer(ModelProto m, TokenizerConfig config, string source)
    {
        Config = config;
        if (m.ModelType != 2)
            throw new NotSupportedException($"{source}: SentencePiece model type {(m.ModelType == 1 ? "Unigram" : m.ModelType.ToString())} is not supported (BPE only)");
        if (m.NormalizerName is not ("" or "identity") && m.HasCharsMap)
            throw new NotSupportedException($"{source}: SentencePiece normalizer '{m.NormalizerName}' is not supported (identity only)");
        _addDummyPrefix = m.AddDummyPrefix;
        _removeExtraWhitespaces = m.RemoveExtraWhitespaces;
        int max = Math.Max(m.Pieces.Count - 1, config.AddedTokensDecoder.Count == 0 ? -1 : config.AddedTokensDecoder.Max(t => t.Id));
        _idToToken = new string[max + 1];
        _types = new PieceType[max + 1];
        _scores = new float[m.Pieces.Count];
        Array.Fill(_byteIds, -1);
        _unkId = -1;
        var userDefined = new List<string>();
        for (int i = 0; i < m.Pieces.Count; i++)
        {
            var (piece, score, type) = m.Pieces[i];
            _idToToken[i] = piece;
            _types[i] = type;
            _scores[i] = score;
            _tokenToId.TryAdd(piece, i);
            switch (type)
            {
                case PieceType.Normal or PieceType.Unused: _pieces.TryAdd(piece, i); break;
                case PieceType.UserDefined: _pieces.TryAdd(piece, i); userDefined.Add(piece); _special.Add(i); break;
                case PieceType.Unknown: _unkId = i; _special.Add(i); break;
                case PieceType.Control: _special.Add(i); break;
                case PieceType.Byte:
                    _byteIds[ByteOf(piece) ?? throw new InvalidDataException($"{source}: piece {i} '{piece}' has type BYTE but is not <0xXX>")] = i;
                    break;
            }
        }
        if (_unkId < 0) throw new InvalidDataException($"{source}: the SentencePiece model has no unknown piece");
        _byteFallback = _byteIds.All(b => b >= 0);
        foreach (var g in userDefined.Where(u => u.Length > 0).GroupBy(u => u[0]))
            _userDefined[g.Key] = [.. g.OrderByDescending(u => u.Length)];
        foreach (var t in config.AddedTokensDecoder)
        {
            _idToToken[t.Id] = t.Content;
            if (_types[t.Id] == 0) _types[t.Id] = PieceType.UserDefined;
            _tokenToId[t.Content] = t.Id;
            _addedIds.Add(t.Id);
            if (t.Special) _special.Add(t.Id);
        }
        _added = new AddedTokenMatcher(config.AddedTokensDecoder);
        BosTokenId = config.BosToken is null ? Valid(m.BosId) : TokenToId(config.BosToken);
        EosTokenId = config.EosToken is null ? Valid(m.EosId) : TokenToId(config.EosToken);
        PadTokenId = config.PadToken is null ? null : TokenToId(config.PadToken);
    }

    // "<0x41>" -> 0x41
    static byte? ByteOf(string piece) =>
        piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
        && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b) ? b : null;

    int? Valid(int id) => id >= 0 && id < _idToToken.Length ? id : null;

    /// <summary>Loads DIR/tokenizer.model with DIR/tokenizer_config.json (special tokens, BOS/EOS, chat template).</summary>
    public static SentencePieceModelTokenizer FromDirectory(string dir)
    {
        string path = Path.Combine(dir, "tokenizer.model");
        if (!File.Exists(path)) throw new FileNotFoundException($"no tokenizer.model in {dir}", path);
        return FromModel(File.ReadAllBytes(path), TokenizerConfig.Load(dir), path);
    }

    public static SentencePieceModelTokenizer FromModel(byte[] model, TokenizerConfig? config = null, string source = "tokenizer.model")
    {
        ModelProto m;
        try
        {
            m = ModelProto.Read(model);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"{source}: not a SentencePiece model ({e.Message})", e);
        }
        if (m.Pieces.Count == 0) throw new InvalidDataException($"{source}: not a SentencePiece model (no pieces)");
        return new SentencePieceModelTokenizer(m, config ?? TokenizerConfig.Empty, source);
    }

    public PieceType TypeOf(int id) => id >= 0 && id < _types.Length ? _types[id] : 0;

    /// <summary>The piece's score in tokenizer.model (0 for ids past its pieces: added tokens).</summary>
    public float ScoreOf(int id) => id >= 0 && id < _scores.Length ? _scores[id] : 0;

    public override bool IsSpecial(int id) => _special.Contains(id);

    public override int? TokenToId(string token) => _tokenToId.TryGetValue(token, out int id) ? id : null;

    public override string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    /// <summary>With special tokens: BOS when add_bos_token (default true, as LlamaTokenizer), EOS when add_eos_token.</summary>
    public override int[] Encode(string text, bool addSpecialTokens = false)
    {
        var ids = new List<int>(text.Length / 2 + 2);
        if (addSpecialTokens && (Config.AddBosToken ?? true) && BosTokenId is int bos) ids.Add(bos);
        EncodeTo(text, ids);
        if (addSpecialTokens && (Config.AddEosToken ?? false) && EosTokenId is int eos) ids.Add(eos);
        return [.. ids];
    }

    public override void EncodeTo(string text, List<int> ids)
    {
        if (_added.IsEmpty)
        {
            EncodeSegment(text, ids);
            return;
        }
        var segments = new List<Segment>();
        _added.Split(text, 0, segments);
        foreach (var s in segments)
        {
            if (s.TokenId >= 0) ids.Add(s.TokenId);
            else EncodeSegment(s.Text, ids);
        }
    }

    // sentencepiece Normalize (identity) + bpe_model.cc Encode + byte fallback.
    void EncodeSegment(string text, List<int> ids)
    {
        if (_removeExtraWhitespaces) text = string.Join(' ', text.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (text.Length == 0) return;
        string norm = (_addDummyPrefix ? "\u2581" : "") + text.Replace(' ', '\u2581');

        // Initial symbols: characters (a surrogate pair is one), user-defined pieces frozen whole.
        var start = new List<int>(norm.Length);
        var len = new List<int>(norm.Length);
        var frozen = new List<bool>(norm.Length);
        for (int i = 0; i < norm.Length;)
        {
            int l = char.IsHighSurrogate(norm[i]) && i + 1 < norm.Length && char.IsLowSurrogate(norm[i + 1]) ? 2 : 1;
            bool f = false;
            if (_userDefined.TryGetValue(norm[i], out var cands))
                foreach (var u in cands)
                    if (string.CompareOrdinal(norm, i, u, 0, u.Length) == 0) { l = u.Length; f = true; break; }
            start.Add(i);
            len.Add(l);
            frozen.Add(f);
            i += l;
        }
        int n = start.Count;
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
        var lens = len.ToArray();

        // Highest score first; ties to the smaller left index (sentencepiece's SymbolPairComparator).
        var agenda = new PriorityQueue<(int Left, int Right, int Size), (float, int)>();
        void MaybeAdd(int left, int right)
        {
            if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
            int size = lens[left] + lens[right];
            if (!_pieces.TryGetValue(norm.Substring(start[left], size), out int id)) return;
            agenda.Enqueue((left, right, size), (-_scores[id], left));
        }
        for (int i = 0; i + 1 < n; i++) MaybeAdd(i, i + 1);
        while (agenda.TryDequeue(out var p, out _))
        {
            if (lens[p.Left] == 0 || lens[p.Right] == 0 || lens[p.Left] + lens[p.Right] != p.Size || next[p.Left] != p.Right) continue;
            lens[p.Left] = p.Size;
            lens[p.Right] = 0;
            next[p.Left] = next[p.Right];
            if (next[p.Right] >= 0) prev[next[p.Right]] = p.Left;
            MaybeAdd(prev[p.Left], p.Left);
            MaybeAdd(p.Left, next[p.Left]);
        }

        bool lastUnk = false;
        for (int i = 0; i >= 0 && i < n; i = next[i])
        {
            string piece = norm.Substring(start[i], lens[i]);
            if (_pieces.TryGetValue(piece, out int id))
            {
                ids.Add(id);
                lastUnk = false;
            }
            else if (_byteFallback)
            {
                foreach (byte b in Encoding.UTF8.GetBytes(piece)) ids.Add(_byteIds[b]);
            }
            else if (!lastUnk)
            {
                ids.Add(_unkId);   // sentencepiece merges consecutive unknowns into one
                lastUnk = true;
            }
        }
    }

    /// <summary>
    /// sentencepiece's decode for each run between added tokens: ▁ → space, byte pieces → UTF-8 (invalid → U+FFFD), the
    /// run's leading dummy-prefix space dropped; added, control and user-defined tokens kept as their text unless
    /// <paramref name="skipSpecialTokens"/>.
    /// </summary>
    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        bool runStart = true;
        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
        foreach (int id in ids)
        {
            string? tok = IdToToken(id);
            if (tok is null) continue;
            if (skipSpecialTokens && IsSpecial(id))
            {
                Flush();
                runStart |= _addedIds.Contains(id);
                continue;
            }
            var type = TypeOf(id);
            if (type == PieceType.Byte && ByteOf(tok) is byte b)
            {
                bytes.Add(b);
                runStart = false;
                continue;
            }
            Flush();
            if (type is PieceType.Normal or PieceType.Unused)
            {
                string s = tok.Replace('\u2581', ' ');
                if (runStart && _addDummyPrefix && s.StartsWith(' ')) s = s[1..];
                sb.Append(s);
                runStart = false;
            }
            else
            {
                sb.Append(tok);
                // Text after an added token was encoded as its own segment with its own dummy prefix.
                runStart |= _addedIds.Contains(id);
            }
        }
        Flush();
        return sb.ToString();
    }

    /// <summary>The parts of a sentencepiece ModelProto the tokenizer needs (sentencepiece_model.proto field numbers).</summary>
    sealed class ModelProto
    {
        public List<(string Piece, float Score, PieceType Type)> Pieces { get; } = [];
        public int ModelType { get; private set; } = 1;          // TrainerSpec.model_type, default UNIGRAM
        public int BosId { get; private set; } = 1;
        public int EosId { get; private set; } = 2;
        public string NormalizerName { get; private set; } = "";
        public bool HasCharsMap { get; private set; }
        public bool AddDummyPrefix { get; private set; } = true;
        public bool RemoveExtraWhitespaces { get; private set; } = true;

        public static ModelProto Read(byte[] data)
        {
            var m = new ModelProto();
            var input = new CodedInputStream(data);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                int field = WireFormat.GetTagFieldNumber(tag);
                if (field is not (1 or 2 or 3) || WireFormat.GetTagWireType(tag) != WireFormat.WireType.LengthDelimited)
                {
                    input.SkipLastField();
                    continue;
                }
                var sub = new CodedInputStream(input.ReadBytes().ToByteArray());
                string piece = "";
                float score = 0;
                var type = PieceType.Normal;
                uint t;
                while ((t = sub.ReadTag()) != 0)
                {
                    switch (field, WireFormat.GetTagFieldNumber(t))
                    {
                        case (1, 1): piece = sub.ReadString(); break;
                        case (1, 2): score = sub.ReadFloat(); break;
                        case (1, 3): type = (PieceType)sub.ReadEnum(); break;
                        case (2, 3): m.ModelType = sub.ReadEnum(); break;
                        case (2, 41): m.BosId = sub.ReadInt32(); break;
                        case (2, 42): m.EosId = sub.ReadInt32(); break;
                        case (3, 1): m.NormalizerName = sub.ReadString(); break;
                        case (3, 2): m.HasCharsMap = sub.ReadBytes().Length > 0; break;
                        case (3, 3): m.AddDummyPrefix = sub.ReadBool(); break;
                        case (3, 4): m.RemoveExtraWhitespaces = sub.ReadBool(); break;
                        default: sub.SkipLastField(); break;
                    }
                }
                if (field == 1) m.Pieces.Add((piece, score, type));
            }
            return m;
        }
    }
}
