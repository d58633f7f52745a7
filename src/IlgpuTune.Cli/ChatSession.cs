// One chat: XTuner turn texts (XtunerChatPrompt) tokenized as xtuner/tools/chat.py does (special tokens such as BOS on the
// first turn only), answered by a Generator that keeps the whole conversation in its KV cache. Unlike chat.py, the
// history stays as token ids (chat.py decodes it to text and tokenizes it again each turn).
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;

namespace IlgpuTune.Cli;

internal sealed class ChatSession : IDisposable
{
    public const string InputPrompt = "\ndouble enter to end input (EXIT: exit chat, RESET: reset history) >>> ";

    private readonly HfTokenizer _tokenizer;
    private readonly XtunerChatPrompt _prompt;
    private readonly GenerationOptions _options;
    private readonly Generator _generator;
    private readonly Random _rng;

    public ChatSession(CausalLM model, HfTokenizer tokenizer, XtunerChatPrompt prompt, GenerationOptions options, int seed)
    {
        _tokenizer = tokenizer;
        _prompt = prompt;
        _options = options;
        _generator = new Generator(model, ids => tokenizer.Decode(ids));
        _rng = new Random(seed);
    }

    /// <summary>Answers one user turn, streaming the answer to <paramref name="onText"/>.</summary>
    public GenerationResult Ask(string input, Action<string> onText)
    {
        bool first = _prompt.Round == 0;
        var ids = _tokenizer.Encode(_prompt.NextTurn(input), addSpecialTokens: first);
        return _generator.Generate(ids, _options, _rng, onText);
    }

    public void Reset()
    {
        _prompt.Reset();
        _generator.Reset();
    }

    /// <summary>The interactive loop of chat.py: multi-line input ended by an empty line; RESET, EXIT; end of input quits.</summary>
    public int Run(TextReader input, TextWriter output)
    {
        while (true)
        {
            string? text = ReadInput(input, output);
            while (text?.Trim() == "RESET")
            {
                output.WriteLine("Log: History responses have been removed!");
                Reset();
                text = ReadInput(input, output);
            }
            if (text is null || text.Trim() == "EXIT")
            {
                output.WriteLine(text is null ? "" : "Log: Exit!");
                return 0;
            }
            AnswerTo(text, output);
            // chat.py's rule: once the conversation reaches max_new_tokens tokens it starts over.
            if (_generator.Tokens.Count >= _options.MaxNewTokens)
            {
                output.WriteLine($"Remove the memory of history responses, since it exceeds the length limitation {_options.MaxNewTokens}.");
                Reset();
            }
        }
    }

    /// <summary>false (chat --no-streamer): each answer is printed when complete.</summary>
    public bool Stream { get; init; } = true;

    /// <summary>Streams the answer to <paramref name="output"/> (or writes it whole) and ends the line.</summary>
    public void AnswerTo(string text, TextWriter output)
    {
        var whole = new System.Text.StringBuilder();
        Ask(text, piece =>
        {
            if (!Stream)
            {
                whole.Append(piece);
                return;
            }
            output.Write(piece);
            output.Flush();
        });
        output.WriteLine(whole.ToString());
        output.Flush();
    }

    // Lines up to an empty one, joined by '\n'; null at the end of the input with nothing read.
    private static string? ReadInput(TextReader input, TextWriter output)
    {
        output.Write(InputPrompt);
        output.Flush();
        var lines = new List<string>();
        while (true)
        {
            string? line = input.ReadLine();
            if (line is null) return lines.Count == 0 ? null : string.Join('\n', lines);
            if (line.Length == 0) return string.Join('\n', lines);
            lines.Add(line);
        }
    }

    public void Dispose() => _generator.Dispose();
}
