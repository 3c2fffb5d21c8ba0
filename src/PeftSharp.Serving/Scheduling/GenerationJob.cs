using System.Threading.Channels;
using PeftSharp.Generation;

namespace PeftSharp.Serving.Scheduling;

/// <summary>A generated token; with log probabilities requested, its log-probability and the top alternatives (most likely first).</summary>
internal readonly record struct GeneratedToken(int Id, float Logprob = float.NaN, (int Id, float Logprob)[]? Top = null);

/// <summary>
/// One request as the batch worker sees it: prompt ids, sampling, the internal adapter name of its row (null = base)
/// and a channel the worker writes generated ids to. The channel completes when the row leaves the batch.
/// </summary>
internal sealed class GenerationJob
{
    readonly Channel<GeneratedToken> _tokens = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });

    /// <remarks><c>topLogprobs</c>: Log probabilities wanted (the number of alternatives per token); null: none are computed.</remarks>
    public GenerationJob(IReadOnlyList<int> prompt, SamplingOptions options, IReadOnlyCollection<int> stopIds, string? adapter, CancellationToken cancel,
        int? topLogprobs = null)
    {
        if (topLogprobs < 0) throw new ArgumentException("top logprobs must be >= 0");
        TopLogprobs = topLogprobs;
        if (prompt.Count == 0) throw new ArgumentException("the prompt encodes to zero tokens");
        if (options.MaxNewTokens < 1) throw new ArgumentException("max_tokens must be >= 1");
        Prompt = prompt;
        Options = options;
        StopIds = stopIds;
        Adapter = adapter;
        Cancel = cancel;
        Sampler = new TokenSampler(options, prompt);
    }

    public IReadOnlyList<int> Prompt { get; }
    public SamplingOptions Options { get; }
    public IReadOnlyCollection<int> StopIds { get; }
    public string? Adapter { get; }
    public CancellationToken Cancel { get; }
    public int? TopLogprobs { get; }
    internal TokenSampler Sampler { get; }
    internal int Generated { get; set; }

    /// <summary>"stop" (a stop id), "length" (max tokens) or "cancelled"; set before <see cref="Tokens"/> completes.</summary>
    public string? FinishReason { get; private set; }

    public ChannelReader<GeneratedToken> Tokens => _tokens.Reader;

    /// <summary>Records a token; true when the row is finished (stop id or max tokens reached).</summary>
    internal bool Emit(GeneratedToken token)
    {
        Generated++;
        _tokens.Writer.TryWrite(token);
        if (StopIds.Contains(token.Id)) return Finish("stop");
        return Generated >= Options.MaxNewTokens && Finish("length");
    }

    internal bool Finish(string reason)
    {
        FinishReason ??= reason;
        if (_tokens.Writer.TryComplete()) Done?.Invoke();
        return true;
    }

    internal void Fail(Exception e)
    {
        if (_tokens.Writer.TryComplete(e)) Done?.Invoke();
    }

    /// <summary>Called once when the job ends, however it ends (the scheduler counts requests in flight).</summary>
    internal Action? Done { get; set; }
}
