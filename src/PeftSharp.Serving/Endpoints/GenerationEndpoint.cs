using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using PeftSharp.Data;
using PeftSharp.Generation;
using PeftSharp.Serving.Hosting;
using PeftSharp.Serving.OpenAi;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Endpoints;

/// <summary>POST /v1/completions and /v1/chat/completions: parse, pick the adapter, queue, stream or collect.</summary>
public static class GenerationEndpoint
{
    public static async Task Handle(HttpContext http, ServerState s, bool chat)
    {
        var req = CompletionRequest.Parse(await EndpointIo.ReadJsonObject(http), chat);
        int[] prompt = PromptIds(req, s, chat);
        int context = s.Config.MaxPositionEmbeddings;
        if (prompt.Length >= context) throw ServingException.BadRequest($"the prompt is {prompt.Length} tokens; the model's context is {context}");
        int maxTokens = req.MaxTokens ?? (chat ? context - prompt.Length : Math.Min(16, context - prompt.Length));
        if (prompt.Length + maxTokens > context)
            throw ServingException.BadRequest($"prompt ({prompt.Length} tokens) + max_tokens ({maxTokens}) exceeds the model's context of {context}");

        using var lease = await s.Adapters.AcquireAsync(req.Model);
        string model = req.Model ?? s.Adapters.BaseName;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        var sampling = new SamplingOptions { MaxNewTokens = maxTokens, Temperature = req.Temperature, TopP = req.TopP, Seed = req.Seed };
        var job = new GenerationJob(prompt, sampling, s.StopIds, lease.InternalName, cts.Token);
        if (!s.Scheduler.TryEnqueue(job))
            throw s.Scheduler.Accepting ? new ServingException(429, $"too many queued requests (--max-queue {s.Options.MaxQueue}); retry later", "rate_limit_error")
                : new ServingException(503, "the server is shutting down", "server_shutting_down");

        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var text = new TextAssembler(s, req.Stop);
        if (req.Stream)
        {
            await EndpointIo.StartEvents(http);
            if (chat) await EndpointIo.Event(http, OpenAiResponses.ChatChunk(id, created, model, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null));
            await foreach (var tok in job.Tokens.ReadAllAsync(CancellationToken.None))
            {
                string delta = text.Push(tok, cts);
                if (delta.Length > 0) await EndpointIo.Event(http, Chunk(delta, null));
            }
            string last = text.Flush();
            if (http.RequestAborted.IsCancellationRequested) return;
            await EndpointIo.Event(http, Chunk(last, text.FinishReason(job)));
            await EndpointIo.Done(http);
            return;
        }
        await foreach (var tok in job.Tokens.ReadAllAsync(CancellationToken.None)) text.Push(tok, cts);
        text.Flush();
        if (http.RequestAborted.IsCancellationRequested) return;
        var usage = OpenAiResponses.Usage(prompt.Length, job.Generated);
        await EndpointIo.Json(http, 200, chat ? OpenAiResponses.Chat(id, created, model, text.Text, text.FinishReason(job), usage)
            : OpenAiResponses.Completion(id, created, model, text.Text, text.FinishReason(job), usage));

        JsonObject Chunk(string delta, string? finish) => chat
            ? OpenAiResponses.ChatChunk(id, created, model, delta.Length > 0 ? new JsonObject { ["content"] = delta } : new JsonObject(), finish)
            : OpenAiResponses.CompletionChunk(id, created, model, delta, finish);
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
        var enc = s.Encode(req.Prompt!);
        if (enc.Length == 0) throw ServingException.BadRequest("'prompt' encodes to zero tokens");
        return enc;
    }

    /// <summary>Generated ids → text deltas: stop ids end the text, partial UTF-8 is held back (<see cref="TextStreamer"/>), stop strings cut it.</summary>
    sealed class TextAssembler(ServerState s, string[] stops)
    {
        readonly TextStreamer _streamer = new(s.Decode);
        readonly StopMatcher _stop = new(stops);
        readonly System.Text.StringBuilder _out = new();

        public string Text => _out.ToString();

        public string Push(int id, CancellationTokenSource cancelRow)
        {
            if (_stop.Stopped || s.StopIds.Contains(id)) return "";
            string delta = _stop.Push(_streamer.Push(id));
            if (_stop.Stopped) cancelRow.Cancel();   // the row leaves the batch at the next step
            _out.Append(delta);
            return delta;
        }

        /// <summary>At the end: text held back for an unfinished UTF-8 character is sent as decoded (U+FFFD), as a full decode gives.</summary>
        public string Flush()
        {
            string rest = _stop.Push(_streamer.Flush()) + _stop.Flush();
            _out.Append(rest);
            return rest;
        }

        public string FinishReason(GenerationJob job) => _stop.Stopped ? "stop" : job.FinishReason == "length" ? "length" : "stop";
    }
}
