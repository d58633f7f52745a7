// `serve`: an OpenAI-compatible HTTP API over one model (ASP.NET Core minimal APIs from the shared framework).
// POST /v1/chat/completions (JSON or SSE stream), GET /v1/models, the chat page at /. The model's chat_template renders the
// messages; one request generates at a time (the others wait in order on a semaphore); a client that disconnects cancels
// its generation; bad requests get HTTP 400 with OpenAI's error body and the server goes on.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using IlgpuTune.Core;
using IlgpuTune.Data.Templates;
using IlgpuTune.Data.Templates.Jinja;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.Model;
using IlgpuTune.Model.Generation;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace IlgpuTune.Cli;

/// <summary>A request the client got wrong: HTTP 400 (or <see cref="Status"/>) with OpenAI's error body.</summary>
public sealed class OpenAiRequestException(string message, string? param = null, string code = "invalid_request", int status = 400)
    : Exception(message)
{
    public string? Param { get; } = param;
    public string Code { get; } = code;
    public int Status { get; } = status;
}

public sealed class OpenAiServer : IDisposable
{
    /// <summary>Largest request body accepted (bytes).</summary>
    public const long MaxRequestBytes = 1 << 20;

    private readonly Device _device;
    private readonly CausalLM _model;
    private readonly ITokenizer _tokenizer;
    // The tokenizer's chat_template, or else an XTuner prompt template (--prompt-template, as `chat` takes it).
    private readonly JinjaTemplate? _template;
    private readonly PromptTemplate? _xtuner;
    private readonly int[] _eos;
    private readonly SemaphoreSlim _turn = new(1, 1);

    public string ModelId { get; }

    /// <param name="promptTemplate">an XTuner prompt template name: messages are rendered as xtuner chat builds its turns
    /// (for models trained with one and no chat_template); null: the tokenizer's chat_template.</param>
    public OpenAiServer(string modelDir, string? adapterDir, string? device = null, string? promptTemplate = null)
    {
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"model folder {modelDir} does not exist");
        _tokenizer = Tokenizers.FromDirectory(modelDir);
        if (promptTemplate is not null) _xtuner = XtunerTemplates.Get(promptTemplate);
        else
            _template = JinjaTemplate.Parse(ChatTemplates.Resolve("auto", _tokenizer.Config)
                ?? throw new InvalidDataException($"{modelDir}: the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja); " +
                    "give the XTuner template the model was trained with: --prompt-template NAME"));
        var config = ModelConfig.Load(modelDir);
        _eos = GenerationConfig.EosTokenIds(modelDir, config, _tokenizer.EosTokenId);
        ModelId = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(adapterDir ?? modelDir)));
        _device = Device.Create(device);
        _model = ModelLoader.Load(modelDir, _device, frozenAsStored: true);
        if (adapterDir is not null) PeftAdapter.Load(adapterDir, _model);
    }

    /// <summary>The web app on http://host:port (port 0: any free one; see the app's Urls after start).</summary>
    public WebApplication Build(string host, int port)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = MaxRequestBytes);
        builder.WebHost.UseUrls($"http://{(host.Contains(':') ? $"[{host}]" : host)}:{port}");
        var app = builder.Build();
        app.MapGet("/", () => Results.Content(ChatPage.Html, "text/html; charset=utf-8"));
        app.MapGet("/v1/models", () => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = ModelId, ["object"] = "model", ["created"] = 0, ["owned_by"] = "ilgpu-tune" }),
        }));
        app.MapPost("/v1/chat/completions", ChatCompletions);
        app.MapFallback((HttpContext c) => Error(c, new OpenAiRequestException($"no route {c.Request.Method} {c.Request.Path}", code: "not_found", status: 404)));
        return app;
    }

    private async Task ChatCompletions(HttpContext http)
    {
        ChatRequest request;
        try
        {
            request = await ReadRequest(http);
        }
        catch (OpenAiRequestException e)
        {
            await Error(http, e);
            return;
        }
        await _turn.WaitAsync(http.RequestAborted).ConfigureAwait(false);
        try
        {
            if (request.Stream) await Stream(http, request);
            else
            {
                var answer = await Task.Run(() => Generate(request, null, http.RequestAborted));
                await http.Response.WriteAsJsonAsync(Completion(request, answer));
            }
        }
        finally
        {
            _turn.Release();
        }
    }

    private async Task Stream(HttpContext http, ChatRequest request)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var pieces = Channel.CreateUnbounded<string>();
        var generation = Task.Run(() =>
        {
            try
            {
                return Generate(request, p => pieces.Writer.TryWrite(p), http.RequestAborted);
            }
            finally
            {
                pieces.Writer.TryComplete();
            }
        });
        async Task Send(JsonObject delta, string? finish)
        {
            var chunk = new JsonObject
            {
                ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = ModelId,
                ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["finish_reason"] = finish }),
            };
            await http.Response.WriteAsync($"data: {chunk.ToJsonString()}\n\n", http.RequestAborted);
            await http.Response.Body.FlushAsync(http.RequestAborted);
        }
        try
        {
            await Send(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null);
            await foreach (var piece in pieces.Reader.ReadAllAsync(http.RequestAborted)) await Send(new JsonObject { ["content"] = piece }, null);
            var answer = await generation;
            await Send(new JsonObject(), answer.FinishReason);
            await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted);
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            await generation; // the generator saw the same token and stops after its current step
        }
    }

    private sealed record Answer(string Text, string FinishReason, int CompletionTokens);

    // Generates one answer; stop sequences end it wherever they appear in the text, even inside a token (OpenAI's rule).
    private Answer Generate(ChatRequest r, Action<string>? onText, CancellationToken cancel)
    {
        using var generator = new Generator(_model, ids => _tokenizer.Decode(ids));
        using var stopped = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var scanner = new StopScanner(r.Stop, onText);
        var options = new GenerationOptions { MaxNewTokens = r.MaxTokens, Temperature = r.Temperature, TopP = r.TopP, EosTokenIds = _eos };
        var result = generator.Generate(r.PromptIds, options, new Random(r.Seed ?? Random.Shared.Next()), piece =>
        {
            if (scanner.Push(piece)) stopped.Cancel();
        }, stopped.Token);
        scanner.Flush();
        string finish = scanner.Hit || result.Reason is StopReason.EosToken or StopReason.StopWord or StopReason.Cancelled ? "stop" : "length";
        return new Answer(scanner.Text, finish, result.Tokens.Length);
    }

    private JsonObject Completion(ChatRequest r, Answer answer) => new()
    {
        ["id"] = "chatcmpl-" + Guid.NewGuid().ToString("N"),
        ["object"] = "chat.completion",
        ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
        ["model"] = ModelId,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = 0,
            ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = answer.Text },
            ["finish_reason"] = answer.FinishReason,
        }),
        ["usage"] = new JsonObject
        {
            ["prompt_tokens"] = r.PromptIds.Length, ["completion_tokens"] = answer.CompletionTokens,
            ["total_tokens"] = r.PromptIds.Length + answer.CompletionTokens,
        },
    };

    private sealed record ChatRequest(int[] PromptIds, bool Stream, int MaxTokens, float Temperature, float TopP, IReadOnlyList<string> Stop, int? Seed);

    // Reads and checks the body (OpenAI's field names and ranges), renders the chat template and tokenizes it.
    private async Task<ChatRequest> ReadRequest(HttpContext http)
    {
        JsonElement root;
        try
        {
            using var doc = await JsonDocument.ParseAsync(http.Request.Body, default, http.RequestAborted);
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new OpenAiRequestException($"the request body is not valid JSON ({e.Message})");
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw new OpenAiRequestException($"the request body is larger than {MaxRequestBytes} bytes", code: "request_too_large", status: 413);
        }
        if (root.ValueKind != JsonValueKind.Object) throw new OpenAiRequestException("the request body must be a JSON object");
        if (root.TryGetProperty("model", out var model) && !(model.ValueKind == JsonValueKind.String && model.GetString() == ModelId))
            throw new OpenAiRequestException($"the model '{(model.ValueKind == JsonValueKind.String ? model.GetString() : model.GetRawText())}' " +
                $"does not exist; this server serves '{ModelId}'", "model", "model_not_found");
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw new OpenAiRequestException("'messages' must be a non-empty array", "messages");
        var list = new List<Dictionary<string, object?>>();
        int i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            string where = $"messages[{i++}]";
            if (m.ValueKind != JsonValueKind.Object || !m.TryGetProperty("role", out var role) || role.GetString() is not ("system" or "user" or "assistant" or "developer"))
                throw new OpenAiRequestException($"{where}: expected an object with role system, developer, user or assistant", where);
            list.Add(new() { ["role"] = role.GetString() == "developer" ? "system" : role.GetString(), ["content"] = Content(m, where) });
        }
        bool stream = Bool(root, "stream") ?? false;
        float temperature = Number(root, "temperature", 0, 2) ?? 1f, topP = Number(root, "top_p", 0, 1) ?? 1f;
        if (topP == 0) topP = 1e-6f; // top_p 0 is greedy in effect
        var stop = root.TryGetProperty("stop", out var s) ? s.ValueKind switch
        {
            JsonValueKind.String => [s.GetString()!],
            JsonValueKind.Array when s.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String && x.GetString()!.Length > 0) && s.GetArrayLength() <= 4 =>
                s.EnumerateArray().Select(x => x.GetString()!).ToList(),
            JsonValueKind.Null => [],
            _ => throw new OpenAiRequestException("'stop' must be a string or an array of up to 4 non-empty strings", "stop"),
        } : new List<string>();
        int? seed = root.TryGetProperty("seed", out var sd) && sd.ValueKind != JsonValueKind.Null
            ? sd.TryGetInt32(out int v) ? v : throw new OpenAiRequestException("'seed' must be an integer", "seed") : null;

        var ids = _template is not null
            ? _tokenizer.Encode(ChatTemplates.Render(_template, list, _tokenizer.Config, addGenerationPrompt: true))
            : _tokenizer.Encode(XtunerConversation(list), addSpecialTokens: true);
        if (_xtuner is not null) stop = [.. stop, .. _xtuner.StopWords];
        int context = _model.Config.MaxPositionEmbeddings, room = context - ids.Length;
        if (room <= 0)
            throw new OpenAiRequestException($"the prompt is {ids.Length} tokens; this model's context is {context} tokens", "messages", "context_length_exceeded");
        string maxKey = root.TryGetProperty("max_completion_tokens", out _) ? "max_completion_tokens" : "max_tokens";
        int maxTokens = root.TryGetProperty(maxKey, out var mt) && mt.ValueKind != JsonValueKind.Null
            ? mt.TryGetInt32(out int n) && n > 0 ? n : throw new OpenAiRequestException($"'{maxKey}' must be a positive integer", maxKey)
            : room;
        if (maxTokens > room)
            throw new OpenAiRequestException($"'{maxKey}' is {maxTokens}, but the prompt ({ids.Length} tokens) leaves {room} of this model's " +
                $"{context}-token context", maxKey, "context_length_exceeded");
        return new ChatRequest(ids, stream, maxTokens, temperature, topP, stop, seed);
    }

    // The conversation as xtuner chat builds it turn by turn: the system text in the first turn, each user message through
    // INSTRUCTION (after SEP from the second turn), each earlier answer followed by the template's SUFFIX.
    private string XtunerConversation(List<Dictionary<string, object?>> messages)
    {
        string? system = messages.Where(m => (string?)m["role"] == "system").Select(m => (string?)m["content"]).FirstOrDefault();
        XtunerChatPrompt prompt;
        try
        {
            prompt = new XtunerChatPrompt(_xtuner, system);
        }
        catch (ArgumentException e)
        {
            throw new OpenAiRequestException(e.Message, "messages");
        }
        var text = new StringBuilder();
        foreach (var m in messages)
            switch ((string?)m["role"])
            {
                case "user": text.Append(prompt.NextTurn((string)m["content"]!)); break;
                case "assistant": text.Append((string)m["content"]!).Append(_xtuner!.Suffix ?? ""); break;
            }
        if (prompt.Round == 0) throw new OpenAiRequestException("'messages' has no user message", "messages");
        return text.ToString();
    }

    // A message's content: a string, or OpenAI's array of {type: text, text} parts joined.
    private static string Content(JsonElement m, string where)
    {
        if (!m.TryGetProperty("content", out var c)) throw new OpenAiRequestException($"{where}: missing 'content'", where + ".content");
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind == JsonValueKind.Array && c.EnumerateArray().All(p => p.ValueKind == JsonValueKind.Object
                && p.TryGetProperty("type", out var t) && t.GetString() == "text" && p.TryGetProperty("text", out var x) && x.ValueKind == JsonValueKind.String))
            return string.Concat(c.EnumerateArray().Select(p => p.GetProperty("text").GetString()));
        throw new OpenAiRequestException($"{where}: 'content' must be a string or an array of text parts (images and audio are not supported)", where + ".content");
    }

    private static bool? Bool(JsonElement root, string key) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new OpenAiRequestException($"'{key}' must be true or false", key);

    private static float? Number(JsonElement root, string key, double min, double max) =>
        !root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number && v.GetDouble() is var d && d >= min && d <= max ? (float)d
        : throw new OpenAiRequestException($"'{key}' must be a number from {min} to {max}", key);

    private static Task Error(HttpContext http, OpenAiRequestException e)
    {
        http.Response.StatusCode = e.Status;
        return http.Response.WriteAsJsonAsync(new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = e.Message, ["type"] = "invalid_request_error", ["param"] = e.Param, ["code"] = e.Code },
        });
    }

    public void Dispose()
    {
        _model.Dispose();
        _device.Dispose();
        _turn.Dispose();
    }
}

/// <summary>
/// Passes an answer's text on as it grows, cut before the first stop sequence: text that might begin a stop sequence is
/// held back until the next piece shows whether it does.
/// </summary>
internal sealed class StopScanner(IReadOnlyList<string> stops, Action<string>? emit)
{
    private readonly StringBuilder _text = new();
    private int _emitted;

    public bool Hit { get; private set; }
    /// <summary>The answer so far, without the stop sequence and what follows it.</summary>
    public string Text => _text.ToString(0, _emitted);

    /// <summary>Adds a piece; true once a stop sequence has appeared (the answer is complete).</summary>
    public bool Push(string piece)
    {
        if (Hit) return true;
        _text.Append(piece);
        string s = _text.ToString();
        int cut = -1;
        foreach (var stop in stops)
        {
            int at = s.IndexOf(stop, Math.Max(0, _emitted - stop.Length + 1), StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        if (cut >= 0)
        {
            Hit = true;
            Emit(s, cut);
            return true;
        }
        int hold = 0;
        foreach (var stop in stops)
            for (int k = Math.Min(stop.Length - 1, s.Length - _emitted); k > hold; k--)
                if (s.AsSpan(s.Length - k).SequenceEqual(stop.AsSpan(0, k)))
                {
                    hold = k;
                    break;
                }
        Emit(s, s.Length - hold);
        return false;
    }

    /// <summary>The answer ended without a stop sequence: what was held back is part of it.</summary>
    public void Flush()
    {
        if (!Hit) Emit(_text.ToString(), _text.Length);
    }

    private void Emit(string s, int upTo)
    {
        if (upTo <= _emitted) return;
        emit?.Invoke(s[_emitted..upTo]);
        _emitted = upTo;
    }
}
