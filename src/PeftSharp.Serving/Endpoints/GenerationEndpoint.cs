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
        int[] prompt = PromptIds(req, s, chat);
        int context = s.Config.MaxPositionEmbeddings;
        if (prompt.Length >= context)
            throw ServingException.ContextLengthExceeded($"the prompt is {prompt.Length} tokens; the model's context is {context}", chat ? "messages" : "prompt");
        int maxTokens = req.MaxTokens ?? Math.Min(s.Generation.MaxNewTokens ?? (chat ? context : 16), context - prompt.Length);
        // 64-bit: max_tokens near int.MaxValue must not wrap around and pass.
        if ((long)prompt.Length + maxTokens > context)
            throw ServingException.ContextLengthExceeded($"prompt ({prompt.Length} tokens) + max_tokens ({maxTokens}) exceeds the model's context of {context}", "max_tokens");

        using var lease = await s.Adapters.AcquireAsync(req.Model);
        string model = req.Model ?? s.Adapters.BaseName;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        // Request fields win; what they leave out comes from generation_config.json, else OpenAI's defaults (temperature 1).
        var d = s.Generation.ApplyTo(new SamplingOptions { Temperature = 1.0 });
        var sampling = d with { MaxNewTokens = maxTokens, Temperature = req.Temperature ?? d.Temperature, TopP = req.TopP ?? d.TopP,
            TopK = req.TopK ?? d.TopK, RepetitionPenalty = req.RepetitionPenalty ?? d.RepetitionPenalty, Seed = req.Seed };
        var stopIds = chat ? s.ChatStopIds : s.StopIds;
        var job = new GenerationJob(prompt, sampling, stopIds, lease.InternalName, cts.Token, req.TopLogprobs);
        if (!s.Scheduler.TryEnqueue(job))
            throw s.Scheduler.Accepting ? ServingException.Busy(429, $"too many queued requests (--max-queue {s.Options.MaxQueue}); retry later", "rate_limit_error")
                : ServingException.Busy(503, "the server is shutting down", "server_shutting_down");

        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        // echo: the prompt comes back before the completion (text offsets of the logprobs count from its start).
        string echo = req.Echo ? req.Prompt ?? s.Decode(prompt) : "";
        var text = new TextAssembler(s, stopIds, req.Stop, prompt, wantLogprobs: req.TopLogprobs is not null);
        if (req.Stream)
        {
            await EndpointIo.StartEvents(http);
            if (chat) await EndpointIo.Event(http, WithUsageField(OpenAiResponses.ChatChunk(id, created, model, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null)));
            if (echo.Length > 0) await EndpointIo.Event(http, Chunk(echo, null, null));
            await foreach (var tok in job.Tokens.ReadAllAsync(CancellationToken.None))
            {
                string delta = text.Push(tok, cts);
                if (delta.Length > 0) await EndpointIo.Event(http, Chunk(delta, null, text.TakeLogprobs(final: false)));
            }
            string last = text.Flush();
            if (http.RequestAborted.IsCancellationRequested) return;
            await EndpointIo.Event(http, Chunk(last, text.FinishReason(job), text.TakeLogprobs(final: true)));
            if (req.IncludeUsage)
                await EndpointIo.Event(http, OpenAiResponses.UsageChunk(id, created, model, chat, OpenAiResponses.Usage(prompt.Length, text.CompletionTokens)));
            await EndpointIo.Done(http);
            return;
        }
        await foreach (var tok in job.Tokens.ReadAllAsync(CancellationToken.None)) text.Push(tok, cts);
        text.Flush();
        if (http.RequestAborted.IsCancellationRequested) return;
        var usage = OpenAiResponses.Usage(prompt.Length, text.CompletionTokens);
        var logprobs = Logprobs(text.TakeLogprobs(final: true));
        await EndpointIo.Json(http, 200, chat ? OpenAiResponses.Chat(id, created, model, text.Text, text.FinishReason(job), usage, logprobs)
            : OpenAiResponses.Completion(id, created, model, echo + text.Text, text.FinishReason(job), usage, logprobs));

        JsonObject? Logprobs(List<TokenLogprob>? entries) => entries is null ? null
            : chat ? OpenAiResponses.ChatLogprobs(entries) : OpenAiResponses.CompletionLogprobs(entries, echo.Length);

        JsonObject Chunk(string delta, string? finish, List<TokenLogprob>? entries)
        {
            return WithUsageField(chat
                ? OpenAiResponses.ChatChunk(id, created, model, delta.Length > 0 ? new JsonObject { ["content"] = delta } : new JsonObject(), finish, Logprobs(entries))
                : OpenAiResponses.CompletionChunk(id, created, model, delta, finish, Logprobs(entries)));
        }

        // With include_usage, every chunk but the last carries "usage": null (OpenAI's stream shape).
        JsonObject WithUsageField(JsonObject chunk)
        {
            if (req.IncludeUsage) chunk["usage"] = null;
            return chunk;
        }
    }

    static int[] PromptIds(CompletionRequest req, ServerState s, bool chat)
    {
        if (chat) return s.Encode(ChatPromptText.Render(s.Options.Chat, req.Messages!));
        if (req.PromptIds is { } ids)
        {
            foreach (int i in ids)
                if (i < 0 || i >= s.Config.VocabSize) throw ServingException.BadRequest($"prompt token id {i} is outside the vocabulary [0, {s.Config.VocabSize})");
            return ids;
        }
        var enc = s.Encode(req.Prompt!, addSpecialTokens: true);   // as HF's tokenizer(prompt): BOS where the tokenizer adds one
        if (enc.Length == 0) throw ServingException.BadRequest("'prompt' encodes to zero tokens");
        return enc;
    }
}
