// IChatClient (Microsoft.Extensions.AI) over a LocalModel. A conversation is rendered as `chat` renders it: XTuner turns
// (XtunerChatPrompt; system text on the first), special tokens such as BOS on the first turn only, earlier assistant
// answers as their tokens followed by the first EOS id (where the generator stopped). Generation keeps one KV cache and
// reuses the prefix a new request shares with the last one, so a growing conversation costs only its new tokens.
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using IlgpuTune.Data.Templates;
using IlgpuTune.Model.Generation;
using Microsoft.Extensions.AI;

namespace IlgpuTune.Embedding;

public sealed class LocalChatClient : IChatClient
{
    private readonly LocalModel _model;
    private readonly Generator _generator;
    private readonly SemaphoreSlim _gate = new(1, 1);

    internal LocalChatClient(LocalModel model)
    {
        _model = model;
        _generator = new Generator(model.Model, ids => model.Tokenizer.Decode(ids));
        Metadata = new ChatClientMetadata("ilgpu-tune", providerUri: null, defaultModelId: Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Options.ModelPath)));
    }

    public ChatClientMetadata Metadata { get; }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var (ids, generation, rng) = Prepare(messages, options);
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        GenerationResult result;
        try
        {
            result = await Task.Run(() => _generator.GenerateFromConversation(ids, generation, rng, cancel: cancellationToken), cancellationToken)
                .ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
        cancellationToken.ThrowIfCancellationRequested();
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text))
        {
            FinishReason = Finish(result.Reason),
            ModelId = Metadata.DefaultModelId,
            Usage = new UsageDetails { InputTokenCount = ids.Length, OutputTokenCount = result.Tokens.Length, TotalTokenCount = ids.Length + result.Tokens.Length },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (ids, generation, rng) = Prepare(messages, options);
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
            var run = Task.Run(() =>
            {
                try
                {
                    return _generator.GenerateFromConversation(ids, generation, rng, piece => pieces.Writer.TryWrite(piece), cancellationToken);
                }
                finally
                {
                    pieces.Writer.TryComplete();
                }
            }, CancellationToken.None);
            await foreach (var piece in pieces.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
                yield return new ChatResponseUpdate(ChatRole.Assistant, piece) { ModelId = Metadata.DefaultModelId };
            var result = await run.ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            yield return new ChatResponseUpdate { Role = ChatRole.Assistant, FinishReason = Finish(result.Reason), ModelId = Metadata.DefaultModelId };
        }
        finally
        {
            _gate.Release();
        }
    }

    private static ChatFinishReason? Finish(StopReason reason) => reason switch
    {
        StopReason.EosToken or StopReason.StopWord => ChatFinishReason.Stop,
        StopReason.MaxNewTokens or StopReason.MaxPositionEmbeddings => ChatFinishReason.Length,
        _ => null,
    };

    // The token ids of the conversation up to the assistant's turn, and the generation settings (ChatOptions over the defaults).
    private (int[] Ids, GenerationOptions Options, Random Rng) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? chat)
    {
        var list = messages.ToList();
        var system = list.Where(m => m.Role == ChatRole.System).Select(m => m.Text).ToList();
        var prompt = new XtunerChatPrompt(_model.Template, system.Count > 0 ? string.Join('\n', system) : _model.Options.System, _model.Options.BotName);
        var ids = new List<int>();
        ChatRole? last = null;
        foreach (var m in list.Where(m => m.Role != ChatRole.System))
        {
            if (m.Role == ChatRole.User)
                ids.AddRange(_model.Tokenizer.Encode(prompt.NextTurn(m.Text), addSpecialTokens: prompt.Round == 0));
            else if (m.Role == ChatRole.Assistant)
            {
                if (last != ChatRole.User) throw new ArgumentException("an assistant message must follow a user message", nameof(messages));
                ids.AddRange(_model.Tokenizer.Encode(m.Text, addSpecialTokens: false));
                if (_model.EosTokenIds.Count > 0) ids.Add(_model.EosTokenIds[0]);
            }
            else throw new ArgumentException($"messages with role '{m.Role}' are not supported (system, user and assistant are)", nameof(messages));
            last = m.Role;
        }
        if (last != ChatRole.User) throw new ArgumentException("the conversation must end with a user message", nameof(messages));
        var o = _model.Options;
        var generation = new GenerationOptions
        {
            MaxNewTokens = chat?.MaxOutputTokens ?? o.MaxNewTokens,
            Temperature = chat?.Temperature ?? o.Temperature,
            TopK = chat?.TopK ?? o.TopK,
            TopP = chat?.TopP ?? o.TopP,
            RepetitionPenalty = o.RepetitionPenalty,
            EosTokenIds = [.. _model.EosTokenIds],
            StopWords = [.. chat?.StopSequences ?? [], .. prompt.StopWords],
        };
        generation.Validate();
        return ([.. ids], generation, new Random(chat?.Seed is { } seed ? unchecked((int)seed) : o.Seed));
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? Metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType == typeof(LocalModel) ? _model
        : null;

    public void Dispose()
    {
        _generator.Dispose();
        _gate.Dispose();
    }
}
