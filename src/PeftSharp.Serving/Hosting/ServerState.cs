using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Hosting;

/// <summary>What the endpoints share: the tokenizer, the scheduler that owns the model, and the adapter registry.</summary>
internal sealed class ServerState(ModelConfig config, TextTokenizer tokenizer, BatchScheduler scheduler, AdapterRegistry adapters, ServerOptions options)
{
    readonly object _tokLock = new();

    public ModelConfig Config { get; } = config;
    public BatchScheduler Scheduler { get; } = scheduler;
    public AdapterRegistry Adapters { get; } = adapters;
    public ServerOptions Options { get; } = options;
    public IReadOnlyCollection<int> StopIds { get; } = tokenizer.StopIds(config);
    /// <summary>
    /// What ends a chat reply: <see cref="StopIds"/> and the chat template's end-of-turn ids (&lt;|eot_id|&gt;,
    /// &lt;end_of_turn&gt;), as generate --chat stops. Found on the first chat request, after its prompt rendered (a
    /// template that cannot load is that request's 400, not a failed start).
    /// </summary>
    public IReadOnlyCollection<int> ChatStopIds
    {
        get { lock (_tokLock) return _chatStopIds ??= StopIds.Concat(Options.Chat?.EndOfTurnIds(tokenizer) ?? []).ToHashSet(); }
    }
    IReadOnlyCollection<int>? _chatStopIds;
    /// <summary>The model's generation_config.json: defaults for what a request leaves out.</summary>
    public Generation.GenerationConfig Generation { get; } = tokenizer.Generation;

    // The native tokenizer is not documented as thread-safe; requests are cheap to serialise here.
    public int[] Encode(string text, bool addSpecialTokens = false) { lock (_tokLock) return tokenizer.Encode(text, addSpecialTokens); }
    public string Decode(IReadOnlyList<int> ids) { lock (_tokLock) return tokenizer.Decode(ids); }
    /// <summary>
    /// Each of <paramref name="ids"/> after <paramref name="context"/> (the ids before it, a few suffice), as logprobs
    /// report it. Its text is what the token's decode adds to the context's (so a SentencePiece "▁were" keeps its
    /// space; a byte of an unfinished character reads U+FFFD, the token completing it the whole character), cleaned
    /// up as HF's decode([id]) cleans a token on its own where the tokenizer cleans up tokenization spaces (a " ,"
    /// token reads ","). Its bytes are its own raw bytes (<see cref="TextTokenizer.TokenBytes"/>: one byte of a split
    /// character, not U+FFFD's), less the leading space where its text has none (the decoder strips the first
    /// token's, the clean-up removes one), so bytes and text agree wherever the text is whole characters.
    /// </summary>
    public OpenAi.TokenText[] TokenTexts(IReadOnlyList<int> context, IEnumerable<int> ids)
    {
        lock (_tokLock)
        {
            string before = tokenizer.Decode(context, cleanUpSpaces: false);
            return ids.Select(id =>
            {
                string after = tokenizer.Decode([.. context, id], cleanUpSpaces: false);
                string own = after[before.AsSpan().CommonPrefixLength(after)..];
                string text = tokenizer.CleanUpTokenizationSpaces ? TokenizationSpaces.CleanUp(own) : own;
                byte[] bytes = tokenizer.TokenBytes(id);
                return new OpenAi.TokenText(text, bytes is [(byte)' ', ..] && !text.StartsWith(' ') ? bytes[1..] : bytes);
            }).ToArray();
        }
    }

    /// <summary>A streamer of generated text after <paramref name="prompt"/> whose window decodes take the tokenizer's lock.</summary>
    public Generation.TextStreamer Streamer(IReadOnlyList<int> prompt) =>
        new(ids => { lock (_tokLock) return tokenizer.Decode(ids, cleanUpSpaces: false); }, prompt, tokenizer.CleanUpTokenizationSpaces);
}
