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

    /// <remarks><c>topLogprobs</c>: Log probabilities wanted (the number of alternatives per token); null: none are computed.
    /// <c>scorePrompt</c>: the prompt's tokens are scored too (<see cref="PromptScores"/>, with <c>topLogprobs</c>
    /// alternatives); then max_tokens may be 0 (the row ends after its prefill).</remarks>
    public GenerationJob(IReadOnlyList<int> prompt, SamplingOptions options, IReadOnlyCollection<int> stopIds, string? adapter, CancellationToken cancel,
        int? topLogprobs = null, bool scorePrompt = false)
    {
        if (topLogprobs < 0) throw new ArgumentException("top logprobs must be >= 0");
        if (scorePrompt && topLogprobs is null) throw new ArgumentException("scoring the prompt needs top logprobs");
        TopLogprobs = topLogprobs;
        if (scorePrompt) _promptScores = new(TaskCreationOptions.RunContinuationsAsynchronously);
        if (prompt.Count == 0) throw new ArgumentException("the prompt encodes to zero tokens");
        if (options.MaxNewTokens < (scorePrompt ? 0 : 1)) throw new ArgumentException("max_tokens must be >= 1");
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
    public bool ScoresPrompt => _promptScores is not null;

    // Only a scoring job has one: a job's failure would otherwise leave an unobserved faulted task behind every request.
    readonly TaskCompletionSource<GeneratedToken[]>? _promptScores;

    /// <summary>The prompt's tokens 1..T-1 scored by the row's prefill (<see cref="ScoresPrompt"/>), before its first
    /// token; faults with the job's error, is cancelled if the job ends before its prefill.</summary>
    public Task<GeneratedToken[]> PromptScores => _promptScores?.Task ?? throw new InvalidOperationException("this job does not score its prompt");

    internal void Scored(GeneratedToken[] scores) => _promptScores?.TrySetResult(scores);
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
        _promptScores?.TrySetCanceled();
        if (_tokens.Writer.TryComplete()) Done?.Invoke();
        return true;
    }

    internal void Fail(Exception e)
    {
        _promptScores?.TrySetException(e);
        if (_tokens.Writer.TryComplete(e)) Done?.Invoke();
    }

    /// <summary>Called once when the job ends, however it ends (the scheduler counts requests in flight).</summary>
    internal Action? Done { get; set; }
}
