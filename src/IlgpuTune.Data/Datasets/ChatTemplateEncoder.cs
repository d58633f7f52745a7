using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Datasets;

/// <summary>
/// Encodes a conversation with the model's own chat_template (--prompt-template auto). The whole conversation is rendered
/// once; each assistant reply's supervised span starts where the render of the messages before it with
/// add_generation_prompt=True ends (the template must be prefix-stable there, else an error names the record), and ends
/// after the reply's last characters plus the end-of-turn special token that follows them (&lt;|im_end|&gt;,
/// &lt;|eot_id|&gt;, " &lt;/s&gt;"). Text after the last reply is dropped. As XTuner does, every piece is tokenized on
/// its own; BOS/EOS come only from the template text.
/// </summary>
public sealed class ChatTemplateEncoder : ISampleEncoder
{
    readonly ITokenizer _tok;
    readonly JinjaTemplate _template;
    readonly int _maxLength;
    readonly IReadOnlyDictionary<string, object?>? _kwargs;

    public ChatTemplateEncoder(ITokenizer tokenizer, string templateSource, int maxLength, IReadOnlyDictionary<string, object?>? kwargs = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        _tok = tokenizer;
        try
        {
            _template = JinjaTemplate.Parse(templateSource);
        }
        catch (TemplateException e) when (tokenizer.Config.ChatTemplateSource is { } from)
        {
            throw new TemplateException($"{from}: chat template: {e.Message}");   // a downloaded template's syntax error names its file
        }
        _maxLength = maxLength;
        _kwargs = kwargs;
    }

    /// <summary>The conversation as chat messages: per turn an optional system, the user input and the assistant output.</summary>
    public static List<(Dictionary<string, object?> Message, bool Loss)> Messages(Conversation c)
    {
        var m = new List<(Dictionary<string, object?>, bool)>();
        foreach (var t in c.Turns)
        {
            if (!string.IsNullOrEmpty(t.System)) m.Add((new() { ["role"] = "system", ["content"] = t.System }, false));
            if (t.Input is not null) m.Add((new() { ["role"] = "user", ["content"] = t.Input }, false));
            m.Add((new() { ["role"] = "assistant", ["content"] = t.Output ?? "" }, t.OutputWithLoss));
        }
        return m;
    }

    string Render(IEnumerable<Dictionary<string, object?>> messages, bool addGenerationPrompt, Conversation c)
    {
        try
        {
            return ChatTemplates.Render(_template, messages.ToList(), _tok.Config, addGenerationPrompt, _kwargs);
        }
        catch (TemplateException e)
        {
            throw new DatasetException([new DatasetError(c.Source, "(chat template)", e.Message)]);
        }
    }

    public EncodedSample Encode(Conversation c)
    {
        var msgs = Messages(c);
        var all = msgs.Select(x => x.Message).ToList();
        string full = Render(all, false, c);
        var spans = new List<(int Start, int End, bool Loss)>();
        int cursor = 0;
        for (int i = 0; i < msgs.Count; i++)
        {
            if ((string)all[i]["role"]! != "assistant") continue;
            string prefix = Render(all.Take(i), true, c);
            if (!full.StartsWith(prefix, StringComparison.Ordinal) || prefix.Length < cursor)
                throw new DatasetException([new DatasetError(c.Source, $"messages[{i}]",
                    "the chat template does not render the conversation before this reply as a prefix of the whole; use an XTuner prompt template")]);
            int start = prefix.Length;
            string content = ((string)all[i]["content"]!).Trim();   // templates often trim or strip the reply
            int end = start;
            if (content.Length > 0)
            {
                string tail = content[^Math.Min(content.Length, 16)..];
                int at = full.IndexOf(tail, start, StringComparison.Ordinal);
                if (at < 0)
                    throw new DatasetException([new DatasetError(c.Source, $"messages[{i}]", "the reply's text is not in the chat template's output")]);
                end = at + tail.Length;
            }
            end = AfterEndOfTurnToken(full, end);
            spans.Add((start, end, msgs[i].Loss));
            cursor = end;
        }

        var ids = new List<int>();
        var labels = new List<int>();
        var piece = new List<int>();
        int pos = 0;
        foreach (var (start, end, loss) in spans)
        {
            Append(full[pos..start], false);
            Append(full[start..end], loss);
            pos = end;
        }
        bool truncated = ids.Count > _maxLength;
        int n = Math.Min(ids.Count, _maxLength);
        return new EncodedSample(ids.GetRange(0, n).ToArray(), labels.GetRange(0, n).ToArray(), truncated);

        void Append(string text, bool loss)
        {
            piece.Clear();
            _tok.EncodeTo(text, piece);
            foreach (int id in piece)
            {
                ids.Add(id);
                labels.Add(loss ? id : EncodedSample.IgnoreIndex);
            }
        }
    }

    // Past spaces and one special token right after the reply, when there is one.
    int AfterEndOfTurnToken(string text, int pos)
    {
        int p = pos;
        while (p < text.Length && text[p] == ' ') p++;
        if (p >= text.Length) return pos;
        var first = _tok.Encode(text.Substring(p, Math.Min(64, text.Length - p)));
        if (first.Length == 0 || !_tok.IsSpecial(first[0])) return pos;
        string? tok = _tok.IdToToken(first[0]);
        return tok is not null && text.AsSpan(p).StartsWith(tok, StringComparison.Ordinal) ? p + tok.Length : pos;
    }
}
