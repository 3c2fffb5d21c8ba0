using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace PeftSharp;

/// <summary>
/// A <see cref="PeftModel"/> as Microsoft.Extensions.AI's <see cref="IChatClient"/>: the conversation is rendered with
/// the model's chat template (with the generation prompt, as <see cref="PeftModel.EncodeChat"/> does) and the reply
/// ends at EOS or the template's end-of-turn tokens. Get one with <see cref="PeftChatClientExtensions.AsChatClient"/>.
/// </summary>
/// <remarks>
/// <para><see cref="ChatOptions"/>: <c>MaxOutputTokens</c> (default and most: the rest of the model's context),
/// <c>Temperature</c> (default 0 = greedy, like <see cref="PeftModel.Generate(string, int?, GenerationOptions?)"/>), <c>TopP</c>, <c>TopK</c>,
/// <c>StopSequences</c> (the reply is cut before the first one), <c>Seed</c>, and <c>ModelId</c>: an adapter name
/// (used for that request only), or <see cref="BaseModelId"/> for the base with adapters disabled; left out, the
/// model's active adapter. Options that would change the output and are not implemented (penalties, response
/// format, tools) are refused with <see cref="NotSupportedException"/> rather than ignored.</para>
/// <para>The last streamed update (so the response) carries <c>FinishReason</c>: <see cref="ChatFinishReason.Stop"/>
/// at EOS, an end-of-turn token or a stop sequence, <see cref="ChatFinishReason.Length"/> when <c>MaxOutputTokens</c>
/// (or the context) ran out; and <c>Usage</c>: the prompt's tokens and the tokens generated, the one that ended the
/// reply included, as <c>peft serve</c> reports finish_reason and usage.</para>
/// <para>Requests run one at a time per model: concurrent requests wait for each other, whether they come through one
/// client or several clients of the same model (a request's <c>ModelId</c> switches the model's adapter while it runs).
/// Calls on the <see cref="PeftModel"/> itself from other threads meanwhile are not coordinated with them: see
/// <see cref="PeftModel"/> on threads. The client does not own the model; disposing it leaves the model alone.</para>
/// </remarks>
public sealed class PeftChatClient : IChatClient
{
    /// <summary>The <see cref="ChatOptions.ModelId"/> that selects the base model with every adapter disabled.</summary>
    public const string BaseModelId = "base";

    readonly PeftModel _model;
    bool _disposed;

    /// <summary>A chat client over <paramref name="model"/>; see <see cref="PeftChatClientExtensions.AsChatClient"/>.</summary>
    public PeftChatClient(PeftModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
    }

    /// <summary>Provider "peftsharp"; the default model id is the active adapter (or <see cref="BaseModelId"/>).</summary>
    public ChatClientMetadata Metadata => new("peftsharp", defaultModelId: _model.ActiveAdapter ?? BaseModelId);

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
            updates.Add(update);
        return updates.ToChatResponse();
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var conversation = ToConversation(messages);
        string responseId = $"chatcmpl-{Guid.NewGuid():N}";
        // The model's gate, not the client's: another client of the same model could otherwise switch its adapter mid-reply.
        var gate = _model.ChatGate;
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            using var adapter = SelectAdapter(options?.ModelId, out string modelId);
            var promptIds = _model.EncodeChat(conversation);
            var generation = ToGenerationOptions(options, promptIds.Length);
            using var pieces = _model.GenerateUpdates(promptIds, generation).GetEnumerator();
            // Each step is a forward pass: run it off the caller's thread, so an async caller is not blocked.
            while (await Task.Run(pieces.MoveNext, cancellationToken).ConfigureAwait(false))
            {
                var piece = pieces.Current;
                if (piece.FinishReason is not { } reason)
                {
                    yield return new ChatResponseUpdate(ChatRole.Assistant, piece.Text)
                    {
                        ResponseId = responseId, MessageId = responseId, ModelId = modelId, CreatedAt = DateTimeOffset.UtcNow,
                    };
                    continue;
                }
                // The last item: why the reply ended and its token counts (OpenAI's finish_reason and usage).
                yield return new ChatResponseUpdate
                {
                    Role = ChatRole.Assistant, ResponseId = responseId, MessageId = responseId, ModelId = modelId,
                    FinishReason = reason == GenerationFinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop,
                    Contents = [new UsageContent(new UsageDetails
                    {
                        InputTokenCount = piece.InputTokens, OutputTokenCount = piece.OutputTokens, TotalTokenCount = piece.InputTokens + piece.OutputTokens,
                    })],
                };
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Returns this client, its <see cref="ChatClientMetadata"/> or its <see cref="PeftModel"/> when asked for them.</summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(_model)) return _model;
        return null;
    }

    /// <summary>Releases the client's own resources; the model stays open (the caller owns it).</summary>
    public void Dispose() => _disposed = true;

    static List<(string Role, string Content)> ToConversation(IEnumerable<ChatMessage> messages)
    {
        var conversation = new List<(string, string)>();
        int index = 0;
        foreach (var m in messages)
        {
            var other = m.Contents.FirstOrDefault(c => c is not TextContent);
            if (other is not null)
                throw new NotSupportedException($"messages[{index}] holds {other.GetType().Name}: PeftChatClient renders text messages only");
            conversation.Add((m.Role.Value, m.Text));
            index++;
        }
        if (conversation.Count == 0) throw new ArgumentException("messages is empty: there is nothing to reply to", nameof(messages));
        return conversation;
    }

    /// <summary>Selects the request's adapter; disposing the result restores the model's previous adapter state.</summary>
    IDisposable SelectAdapter(string? modelId, out string selected)
    {
        var names = _model.AdapterNames;
        if (modelId is null || (modelId == _model.ActiveAdapter && names.Contains(modelId)))
        {
            selected = _model.ActiveAdapter ?? BaseModelId;
            return _model.ActiveAdapter is null ? _model.DisableAdapters() : new Scope(() => { });
        }
        if (names.Contains(modelId))
        {
            string? previous = _model.ActiveAdapter;
            _model.SetAdapter(modelId);
            selected = modelId;
            return new Scope(() => { if (previous is not null) _model.SetAdapter(previous); });
        }
        if (modelId == BaseModelId)
        {
            selected = BaseModelId;
            return _model.DisableAdapters();
        }
        throw new ArgumentException(
            $"ChatOptions.ModelId '{modelId}' is not an adapter of this model (adapters: {string.Join(", ", names.DefaultIfEmpty("none"))}; '{BaseModelId}' = the base alone)",
            "options");
    }

    GenerationOptions ToGenerationOptions(ChatOptions? options, int promptLength)
    {
        int context = _model.BaseModel.Config.MaxPositionEmbeddings;
        int rest = Math.Max(0, context - promptLength);
        var generation = new GenerationOptions
        {
            MaxNewTokens = rest,
            StopTokenIds = _model.EndOfTurnIds.ToList(),
        };
        if (options is null) return generation;
        Refuse(options.FrequencyPenalty is not null, "FrequencyPenalty");
        Refuse(options.PresencePenalty is not null, "PresencePenalty");
        Refuse(options.ResponseFormat is ChatResponseFormatJson, "ResponseFormat (JSON)");
        Refuse(options.Tools is { Count: > 0 }, "Tools");
        if (options.MaxOutputTokens is int max)
        {
            if (max < 0) throw new ArgumentException($"ChatOptions.MaxOutputTokens must be >= 0 (got {max})", nameof(options));
            // More than the context holds ends where the context does (FinishReason Length), as documented: the
            // decoder would otherwise run on past the positions it was trained for.
            generation = generation with { MaxNewTokens = Math.Min(max, rest) };
        }
        if (options.Seed is long seed && (seed < int.MinValue || seed > int.MaxValue))
            throw new ArgumentException($"ChatOptions.Seed must fit in 32 bits (got {seed})", nameof(options));
        return generation with
        {
            Temperature = options.Temperature ?? 0,
            TopP = options.TopP ?? 1.0,
            TopK = options.TopK ?? generation.TopK,   // HF's default 50 when sampling without a TopK
            Seed = (int?)options.Seed,
            StopSequences = options.StopSequences?.ToList() ?? [],
        };
    }

    static void Refuse(bool given, string option)
    {
        if (given) throw new NotSupportedException($"ChatOptions.{option} is not supported by PeftChatClient (refused rather than ignored, since it would change the reply)");
    }

    sealed class Scope(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }
}

/// <summary>Microsoft.Extensions.AI for <see cref="PeftModel"/>.</summary>
public static class PeftChatClientExtensions
{
    /// <summary>
    /// The model as an <see cref="IChatClient"/> using its chat template; <see cref="ChatOptions.ModelId"/> picks an
    /// adapter per request (see <see cref="PeftChatClient"/>).
    /// </summary>
    public static IChatClient AsChatClient(this PeftModel model) => new PeftChatClient(model);
}
