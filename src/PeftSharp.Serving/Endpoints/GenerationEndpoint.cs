using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using PeftSharp.Data;
using PeftSharp.Generation;
using PeftSharp.Serving.Hosting;
using PeftSharp.Serving.OpenAi;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Endpoints;

/// <summary>POST /v1/completions and /v1/chat/completions: parse, pick the adapter, queue, stream or collect.</summary>
internal static class GenerationEndpoint
{
    public static async Task Handle(HttpContext http, ServerState s, bool chat)
    {
        var req = CompletionRequest.Parse(await EndpointIo.ReadJsonObject(http), chat);
        var prompts = chat ? [s.Encode(ChatPromptText.Render(s.Options.Chat, req.Messages!))] : req.Prompts.Select(p => PromptIds(p, s)).ToList();
        int context = s.Config.MaxPositionEmbeddings;
        var maxTokens = new int[prompts.Count];
        for (int i = 0; i < prompts.Count; i++)
        {
            int[] prompt = prompts[i];
            if (prompt.Length >= context)
                throw ServingException.ContextLengthExceeded($"{PromptName(prompts.Count, i)} is {prompt.Length} tokens; the model's context is {context}", chat ? "messages" : "prompt");
            maxTokens[i] = req.MaxTokens ?? Math.Min(s.Generation.MaxNewTokens ?? (chat ? context : 16), context - prompt.Length);
            // 64-bit: max_tokens near int.MaxValue must not wrap around and pass.
            if ((long)prompt.Length + maxTokens[i] > context)
                throw ServingException.ContextLengthExceeded($"{PromptName(prompts.Count, i)} ({prompt.Length} tokens) + max_tokens ({maxTokens[i]}) exceeds the model's context of {context}", "max_tokens");
        }

        using var lease = await s.Adapters.AcquireAsync(req.Model);
        string model = req.Model ?? s.Adapters.BaseName;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        // Request fields win; what they leave out comes from generation_config.json, else OpenAI's defaults: temperature 1
        // and the whole vocabulary (OpenAI has no top_k; vLLM's SamplingParams.top_k defaults to 0 = all tokens), not
        // transformers' top_k 50 that `peft generate` keeps.
        var d = s.Generation.ApplyTo(new SamplingOptions { Temperature = 1.0, TopK = 0 });
        var stopIds = chat ? s.ChatStopIds : s.StopIds;
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        // echo + logprobs: the row's prefill scores the prompt too. max_tokens 0 (echo only) generates nothing: a
        // scored row ends after its prefill, an unscored one needs no row.
        bool scores = req.Echo && req.TopLogprobs is not null;
        GenerationJob? Enqueue(int i)
        {
            if (maxTokens[i] == 0 && !scores) return null;
            var sampling = d with { MaxNewTokens = maxTokens[i], Temperature = req.Temperature ?? d.Temperature, TopP = req.TopP ?? d.TopP,
                TopK = req.TopK ?? d.TopK, RepetitionPenalty = req.RepetitionPenalty ?? d.RepetitionPenalty, Seed = req.Seed };
            var job = new GenerationJob(prompts[i], sampling, stopIds, lease.InternalName, cts.Token, req.TopLogprobs, scorePrompt: scores);
            if (!s.Scheduler.TryEnqueue(job))
            {
                cts.Cancel();   // rows of this request already queued leave
                throw s.Scheduler.Accepting ? ServingException.Busy(429, $"too many queued requests (--max-queue {s.Options.MaxQueue}); retry later", "rate_limit_error")
                    : ServingException.Busy(503, "the server is shutting down", "server_shutting_down");
            }
            return job;
        }
        // echo: the prompt comes back before the completion (text offsets of the logprobs count from its start), with
        // its tokens' log probabilities when logprobs are asked for.
        string Echo(int i) => req.Echo ? req.Prompts[i].Text ?? s.Decode(prompts[i]) : "";
        async Task<List<TokenLogprob>?> EchoLogprobs(GenerationJob? job, string echo)
        {
            if (job is not { ScoresPrompt: true }) return null;
            // A job cancelled before its prefill has no scores; a failed one throws its error here, as its tokens would.
            try { return PromptLogprobs(s, job.Prompt, await job.PromptScores, echo); }
            catch (OperationCanceledException) { return null; }
        }

        if (req.Stream)
        {
            // Every prompt's row is queued before any is awaited, so several prompts share the batch; each choice's
            // chunks carry its index and interleave as its tokens come (OpenAI's and vLLM's stream of several prompts),
            // written one event at a time.
            var streamJobs = Enumerable.Range(0, prompts.Count).Select(Enqueue).ToArray();
            var write = new SemaphoreSlim(1, 1);
            async Task Send(JsonObject chunk)
            {
                await write.WaitAsync(CancellationToken.None);
                try { await EndpointIo.Event(http, chunk); } finally { write.Release(); }
            }
            var echoes = new string[prompts.Count];
            var echoLogprobs = new List<TokenLogprob>?[prompts.Count];
            for (int i = 0; i < prompts.Count; i++) { echoes[i] = Echo(i); echoLogprobs[i] = await EchoLogprobs(streamJobs[i], echoes[i]); }
            await EndpointIo.StartEvents(http);
            if (chat) await EndpointIo.Event(http, WithUsageField(OpenAiResponses.ChatChunk(id, created, model, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null)));
            var texts = await Task.WhenAll(Enumerable.Range(0, prompts.Count).Select(async i =>
            {
                string echo = echoes[i];
                var job = streamJobs[i];
                var text = new TextAssembler(s, stopIds, req.Stop, prompts[i], wantLogprobs: req.TopLogprobs is not null);
                if (echo.Length > 0 || echoLogprobs[i] is { Count: > 0 }) await Send(Chunk(echo, null, echoLogprobs[i], 0, i));
                if (job is not null)
                    await foreach (var tok in job.Tokens.ReadAllAsync(CancellationToken.None))
                    {
                        string delta = text.Push(tok, cts);
                        if (delta.Length > 0) await Send(Chunk(delta, null, text.TakeLogprobs(final: false), echo.Length, i));
                    }
                string last = text.Flush();
                if (!http.RequestAborted.IsCancellationRequested)
                    await Send(Chunk(last, Finish(text, job), text.TakeLogprobs(final: true), echo.Length, i));
                return text;
            }));
            if (http.RequestAborted.IsCancellationRequested) return;
            if (req.IncludeUsage)
                await EndpointIo.Event(http, OpenAiResponses.UsageChunk(id, created, model, chat, OpenAiResponses.Usage(prompts.Sum(p => p.Length), texts.Sum(t => t.CompletionTokens))));
            await EndpointIo.Done(http);
            return;
        }

        // Every prompt's row is queued before any is awaited, so several prompts share the batch.
        var jobs = Enumerable.Range(0, prompts.Count).Select(Enqueue).ToArray();
        var choices = await Task.WhenAll(Enumerable.Range(0, prompts.Count).Select(async i =>
        {
            string echo = Echo(i);
            var echoLogprobs = await EchoLogprobs(jobs[i], echo);
            var text = new TextAssembler(s, stopIds, req.Stop, prompts[i], wantLogprobs: req.TopLogprobs is not null);
            if (jobs[i] is { } job)
                await foreach (var tok in job.Tokens.ReadAllAsync(CancellationToken.None)) text.Push(tok, cts);
            text.Flush();
            var entries = text.TakeLogprobs(final: true);
            var logprobs = entries is null ? null : Logprobs([.. echoLogprobs ?? [], .. entries.Select(e => e with { TextOffset = e.TextOffset + echo.Length })], 0);
            return (Text: echo + text.Text, Finish: Finish(text, jobs[i]), Logprobs: logprobs, Tokens: text.CompletionTokens);
        }));
        if (http.RequestAborted.IsCancellationRequested) return;
        var usage = OpenAiResponses.Usage(prompts.Sum(p => p.Length), choices.Sum(c => c.Tokens));
        await EndpointIo.Json(http, 200, chat ? OpenAiResponses.Chat(id, created, model, choices[0].Text, choices[0].Finish, usage, choices[0].Logprobs)
            : OpenAiResponses.Completion(id, created, model, choices.Select(c => (c.Text, c.Finish, c.Logprobs)).ToList(), usage));

        JsonObject? Logprobs(List<TokenLogprob>? entries, int offsetBase) => entries is null ? null
            : chat ? OpenAiResponses.ChatLogprobs(entries) : OpenAiResponses.CompletionLogprobs(entries, offsetBase);

        JsonObject Chunk(string delta, string? finish, List<TokenLogprob>? entries, int offsetBase, int index)
        {
            return WithUsageField(chat
                ? OpenAiResponses.ChatChunk(id, created, model, delta.Length > 0 ? new JsonObject { ["content"] = delta } : new JsonObject(), finish, Logprobs(entries, offsetBase))
                : OpenAiResponses.CompletionChunk(id, created, model, delta, finish, Logprobs(entries, offsetBase), index));
        }

        // With include_usage, every chunk but the last carries "usage": null (OpenAI's stream shape).
        JsonObject WithUsageField(JsonObject chunk)
        {
            if (req.IncludeUsage) chunk["usage"] = null;
            return chunk;
        }
    }

    /// <summary>A prompt scored alone (max_tokens 0) ends by length, as OpenAI's echo-only completions do.</summary>
    static string Finish(TextAssembler text, GenerationJob? job) => job is null ? "length" : text.FinishReason(job);

    static string PromptName(int count, int i) => count == 1 ? "the prompt" : $"prompt {i}";

    /// <summary>
    /// The echoed prompt's tokens with their log probabilities (scored by the row's prefill, <see cref="PromptScorer"/>)
    /// and text offsets in <paramref name="echo"/>: each token's text is looked for where the one before ended (a token
    /// not in the text, e.g. BOS, stands where the text stands).
    /// </summary>
    static List<TokenLogprob> PromptLogprobs(ServerState s, IReadOnlyList<int> promptIds, GeneratedToken[] scored, string echo)
    {
        int[] prompt = [.. promptIds];
        var entries = new List<TokenLogprob>(prompt.Length);
        int at = 0;
        for (int i = 0; i < prompt.Length; i++)
        {
            GeneratedToken? g = i == 0 ? null : scored[i - 1];
            int n = Math.Min(i, TextAssembler.ContextIds);
            var texts = s.TokenTexts(prompt.AsSpan(i - n, n).ToArray(), (g?.Top ?? []).Select(t => t.Id).Prepend(prompt[i]));
            int offset = at;
            at += TextAssembler.Found(echo.AsSpan(at), texts[0].Text)?.Length ?? 0;
            entries.Add(new TokenLogprob(texts[0], g?.Logprob, offset, g is { Top: { } t } ? t.Select((x, k) => (texts[k + 1], x.Logprob)).ToArray() : []));
        }
        return entries;
    }

    static int[] PromptIds(PromptInput p, ServerState s)
    {
        if (p.Ids is { } ids)
        {
            foreach (int i in ids)
                if (i < 0 || i >= s.Config.VocabSize) throw ServingException.BadRequest($"prompt token id {i} is outside the vocabulary [0, {s.Config.VocabSize})");
            return ids;
        }
        var enc = s.Encode(p.Text!, addSpecialTokens: true);   // as HF's tokenizer(prompt): BOS where the tokenizer adds one
        if (enc.Length == 0) throw ServingException.BadRequest("'prompt' encodes to zero tokens");
        return enc;
    }
}
