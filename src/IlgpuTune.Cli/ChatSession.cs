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
    private readonly Lock _gate = new();
    // Set while an answer is being generated: Ctrl-C cancels it.
    private CancellationTokenSource? _answer;

    public ChatSession(CausalLM model, HfTokenizer tokenizer, XtunerChatPrompt prompt, GenerationOptions options, int seed)
    {
        _tokenizer = tokenizer;
        _prompt = prompt;
        _options = options;
        _generator = new Generator(model, ids => tokenizer.Decode(ids));
        _rng = new Random(seed);
    }

    /// <summary>Answers one user turn, streaming the answer to <paramref name="onText"/>; <see cref="CancelAnswer"/> ends it early.</summary>
    public GenerationResult Ask(string input, Action<string> onText)
    {
        bool first = _prompt.Round == 0;
        var ids = _tokenizer.Encode(_prompt.NextTurn(input), addSpecialTokens: first);
        using var answer = new CancellationTokenSource();
        lock (_gate) _answer = answer;
        try
        {
            return _generator.Generate(ids, _options, _rng, onText, answer.Token);
        }
        finally
        {
            lock (_gate) _answer = null;
        }
    }

    /// <summary>Ctrl-C: ends the answer being generated (true), or false when none is (at the prompt Ctrl-C quits).</summary>
    public bool CancelAnswer()
    {
        lock (_gate)
        {
            if (_answer is null) return false;
            _answer.Cancel();
            return true;
        }
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
            try
            {
                AnswerTo(text, output);
            }
            catch (ArgumentException e) when (_generator.MaxPositions is not null)
            {
                output.WriteLine($"Log: input ignored: {e.Message}.");
                Reset();
                continue;
            }
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

    /// <summary>Streams the answer to <paramref name="output"/> (or writes it whole) and ends the line. A conversation that
    /// reaches the model's max_position_embeddings is said so and starts over.</summary>
    public void AnswerTo(string text, TextWriter output)
    {
        var whole = new System.Text.StringBuilder();
        void Write(string piece)
        {
            if (!Stream)
            {
                whole.Append(piece);
                return;
            }
            output.Write(piece);
            output.Flush();
        }
        GenerationResult result;
        try
        {
            result = Ask(text, Write);
        }
        catch (ArgumentException e) when (_generator.MaxPositions is not null && _generator.Tokens.Count > 0)
        {
            output.WriteLine($"Remove the memory of history responses, since {e.Message}.");
            Reset();
            whole.Clear();
            result = Ask(text, Write);
        }
        output.WriteLine(whole.ToString());
        if (result.Reason == StopReason.Cancelled) output.WriteLine("Log: answer stopped (Ctrl-C); Ctrl-C at the prompt quits.");
        if (result.Reason == StopReason.MaxPositionEmbeddings)
        {
            output.WriteLine($"Log: the conversation reached the model's max_position_embeddings ({_generator.MaxPositions} tokens): " +
                "the answer stops here and the history is removed.");
            Reset();
        }
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
