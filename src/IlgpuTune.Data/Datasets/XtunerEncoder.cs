using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Datasets;

/// <summary>One tokenized sample: labels are -100 off the supervised outputs.</summary>
public sealed record EncodedSample(int[] InputIds, int[] Labels, bool Truncated)
{
    public const int IgnoreIndex = -100;
    public bool HasLoss => Array.Exists(Labels, l => l >= 0);
}

/// <summary>Turns a conversation into input ids and labels.</summary>
public interface ISampleEncoder
{
    EncodedSample Encode(Conversation c);
}

/// <summary>
/// XTuner v0 template_map_fn + encode_fn (xtuner/dataset/map_fns/template_map_fn.py, xtuner/dataset/utils.py):
/// every input, output and SEP piece is tokenized on its own with add_special_tokens=False.
/// </summary>
public sealed class XtunerEncoder : ISampleEncoder
{
    readonly ITokenizer _tok;
    readonly PromptTemplate? _template;
    readonly int _maxLength;
    readonly int[] _bos, _eos;

    /// <param name="template">null = no template_map_fn (incremental pre-training configs).</param>
    public XtunerEncoder(ITokenizer tokenizer, PromptTemplate? template, int maxLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        _tok = tokenizer;
        _template = template;
        _maxLength = maxLength;
        (_bos, _eos) = BosEos(tokenizer);
    }

    /// <summary>
    /// get_bos_eos_token_ids: Qwen tokenizers get no BOS (XTuner matches the class name), others [bos_token_id] when set;
    /// EOS is [eos_token_id] and must exist.
    /// </summary>
    public static (int[] Bos, int[] Eos) BosEos(ITokenizer tok)
    {
        bool qwen = tok.Config.TokenizerClass?.Contains("qwen", StringComparison.OrdinalIgnoreCase) == true;
        int[] bos = qwen || tok.BosTokenId is null ? [] : [tok.BosTokenId.Value];
        int eos = tok.EosTokenId ?? throw new InvalidOperationException("the tokenizer has no eos_token (tokenizer_config.json); XTuner needs one");
        return (bos, [eos]);
    }

    /// <summary>template_map_fn on one conversation (identity when there is no template).</summary>
    public IReadOnlyList<TemplatedTurn> ApplyTemplate(Conversation c)
    {
        var outp = new List<TemplatedTurn>(c.Turns.Count);
        for (int i = 0; i < c.Turns.Count; i++)
        {
            var t = c.Turns[i];
            if (_template is null)
            {
                outp.Add(new TemplatedTurn(t.Input ?? "", t.Output ?? "", t.OutputWithLoss, t.NeedEosToken ?? true, t.Sep ?? ""));
                continue;
            }
            string input = XtunerTemplates.Format(_template.Instruction, ("input", t.Input ?? ""), ("round", (i + 1).ToString()));
            if (!string.IsNullOrEmpty(t.System))
            {
                if (_template.System is null)
                    throw new DatasetException([new DatasetError(c.Source, $"conversation[{i}].system",
                        $"prompt template '{_template.Name}' has no SYSTEM, but the turn has a system text")]);
                input = XtunerTemplates.Format(_template.System, ("system", t.System)) + input;
            }
            string output = t.Output ?? "";
            if (!string.IsNullOrEmpty(_template.Suffix)) output += _template.Suffix;
            outp.Add(new TemplatedTurn(input, output, t.OutputWithLoss, !_template.SuffixAsEos, _template.Sep ?? ""));
        }
        return outp;
    }

    public EncodedSample Encode(Conversation c)
    {
        var ids = new List<int>();
        var labels = new List<int>();
        var piece = new List<int>();
        bool nextNeedsBos = true;
        foreach (var turn in ApplyTemplate(c))
        {
            if (nextNeedsBos) Append(ids, labels, _bos, withLoss: false);
            Encode(turn.Input, piece);
            Append(ids, labels, piece, withLoss: false);
            Encode(turn.Output, piece);
            Append(ids, labels, piece, turn.OutputWithLoss);
            if (turn.NeedEosToken)
            {
                nextNeedsBos = true;
                Append(ids, labels, _eos, turn.OutputWithLoss);
            }
            else nextNeedsBos = false;
            if (turn.Sep.Length > 0)
            {
                Encode(turn.Sep, piece);
                Append(ids, labels, piece, withLoss: false);
            }
        }
        bool truncated = ids.Count > _maxLength;
        int n = Math.Min(ids.Count, _maxLength);
        return new EncodedSample(ids.GetRange(0, n).ToArray(), labels.GetRange(0, n).ToArray(), truncated);
    }

    void Encode(string text, List<int> into)
    {
        into.Clear();
        _tok.EncodeTo(text, into);
    }

    static void Append(List<int> ids, List<int> labels, IReadOnlyList<int> piece, bool withLoss)
    {
        foreach (int id in piece)
        {
            ids.Add(id);
            labels.Add(withLoss ? id : EncodedSample.IgnoreIndex);
        }
    }
}
