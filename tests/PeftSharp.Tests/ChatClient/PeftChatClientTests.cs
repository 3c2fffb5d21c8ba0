using Microsoft.Extensions.AI;
using PeftSharp.Generation;
using TorchSharp;

namespace PeftSharp.Tests.ChatClient;

/// <summary>
/// <c>model.AsChatClient()</c> through Microsoft.Extensions.AI's abstractions only, checked against
/// <see cref="PeftModel.Generate"/> on the prompt the model's chat template renders.
/// </summary>
public class PeftChatClientTests
{
    static string Adapter(string kind) => Path.Combine(TestPaths.TinyLlama, "adapters", kind);

    static readonly ChatMessage[] Conversation = [new(ChatRole.System, "be brief"), new(ChatRole.User, "code red fox")];
    static readonly (string Role, string Content)[] Rendered = [("system", "be brief"), ("user", "code red fox")];

    static PeftModel Model()
    {
        var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: Adapter("lora"), adapterName: "lora");
        model.LoadAdapter(Adapter("dora"), "dora");
        model.SetAdapter("lora");
        return model;
    }

    /// <summary>What the client must answer: greedy Generate on the rendered prompt, stopping at the end of the turn.</summary>
    static string Greedy(PeftModel model, int maxNewTokens) =>
        model.Generate(model.ApplyChatTemplate(Rendered), maxNewTokens, new GenerationOptions { StopTokenIds = model.EndOfTurnIds.ToList() });

    [Fact]
    public async Task ResponseIsGreedyGenerateOnTheRenderedPrompt()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        ChatResponse response = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12 });
        string expected = Greedy(model, 12);
        Assert.NotEmpty(expected);
        Assert.Equal(expected, response.Text);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.Equal("lora", response.ModelId);
        Assert.Equal(model.EncodeChat(Rendered).Length, response.Usage?.InputTokenCount);
    }

    [Fact]
    public async Task StreamingUpdatesConcatenateToTheWholeResponse()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        var options = new ChatOptions { MaxOutputTokens = 12 };
        string whole = (await chat.GetResponseAsync(Conversation, options)).Text;
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in chat.GetStreamingResponseAsync(Conversation, options)) updates.Add(u);
        Assert.True(updates.Count(u => u.Text.Length > 0) > 1, "the reply should arrive in several updates");
        Assert.Equal(whole, string.Concat(updates.Select(u => u.Text)));
        Assert.All(updates, u => Assert.Equal(updates[0].ResponseId, u.ResponseId));
    }

    [Fact]
    public async Task MaxOutputTokensAndStopSequencesShortenTheReply()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        string longer = (await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12 })).Text;
        string shorter = (await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 3 })).Text;
        Assert.Equal(Greedy(model, 3), shorter);
        Assert.True(shorter.Length < longer.Length && longer.StartsWith(shorter, StringComparison.Ordinal), $"'{shorter}' vs '{longer}'");

        // Stop at a piece of the greedy reply: the text is cut before it.
        string stop = longer.Substring(longer.Length / 2, Math.Min(2, longer.Length - longer.Length / 2));
        string cut = (await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, StopSequences = [stop] })).Text;
        Assert.Equal(longer[..longer.IndexOf(stop, StringComparison.Ordinal)], cut);
    }

    [Fact]
    public async Task FinishReasonAndUsageSayWhyTheReplyEndedAndHowManyTokensItTook()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        int[] prompt = model.EncodeChat(Rendered);
        // The ids greedy generation makes on this prompt (Generate leaves out an end-of-turn id that stops it).
        using var promptIds = torch.tensor(prompt.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var all = model.Generate(promptIds, new GenerationOptions { MaxNewTokens = 12, StopTokenIds = model.EndOfTurnIds.ToList() });
        Assert.Equal(12, all.shape[1] - prompt.Length);   // the premise: 12 tokens come without an end of turn

        // MaxOutputTokens runs out: Length, and exactly that many ids generated.
        var full = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12 });
        Assert.Equal(ChatFinishReason.Length, full.FinishReason);
        Assert.Equal(prompt.Length, full.Usage?.InputTokenCount);
        Assert.Equal(12, full.Usage?.OutputTokenCount);
        Assert.Equal(prompt.Length + 12, full.Usage?.TotalTokenCount);

        // A stop sequence: Stop, counting the greedy ids up to the one whose streamed text shows the stop sequence
        // (a streamer may hold a token's text back until the next one, so it is not always the first prefix that spells it).
        string text = full.Text;
        string stop = text.Substring(text.Length / 2, Math.Min(2, text.Length - text.Length / 2));
        long[] greedyIds = all.data<long>().Skip(prompt.Length).ToArray();
        var streamer = new TextStreamer(model.Tokenizer, prompt);
        int needed = 0;
        while (!streamer.Text.Contains(stop, StringComparison.Ordinal)) streamer.Push((int)greedyIds[needed++]);
        Assert.True(needed < 12, $"the stop sequence '{stop}' should end the reply early");
        var cut = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, StopSequences = [stop] });
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        Assert.Equal(needed, cut.Usage?.OutputTokenCount);
        Assert.Equal(prompt.Length + needed, cut.Usage?.TotalTokenCount);

        // Streaming: the last update, and only it, says why; its usage content carries the counts.
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in chat.GetStreamingResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 5 })) updates.Add(u);
        Assert.Equal(ChatFinishReason.Length, updates[^1].FinishReason);
        Assert.All(updates.SkipLast(1), u => Assert.Null(u.FinishReason));
        var usage = Assert.Single(updates.SelectMany(u => u.Contents).OfType<UsageContent>());
        Assert.Equal(5, usage.Details.OutputTokenCount);
    }

    [Fact]
    public async Task MaxOutputTokensPastTheContextEndsWhereTheContextDoes()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        int context = model.BaseModel.Config.MaxPositionEmbeddings;
        // The default (no MaxOutputTokens) runs to the end of the context on this model: the premise.
        var whole = await chat.GetResponseAsync(Conversation);
        Assert.Equal(ChatFinishReason.Length, whole.FinishReason);
        Assert.Equal(context, whole.Usage?.TotalTokenCount);
        // Asking for more than fits gives the same reply, ended by the context.
        var asked = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = context * 3 });
        Assert.Equal(ChatFinishReason.Length, asked.FinishReason);
        Assert.Equal(context, asked.Usage?.TotalTokenCount);
        Assert.Equal(whole.Text, asked.Text);
    }

    [Fact]
    public async Task SamplingOptionsChangeTheReplyAsTheyShould()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        string greedy = Greedy(model, 12);
        async Task<string> Reply(ChatOptions o) => (await chat.GetResponseAsync(Conversation, o)).Text;
        ChatOptions Hot(long seed) => new() { MaxOutputTokens = 12, Temperature = 5f, Seed = seed };

        // Same seed, same sample; a hot temperature over a few seeds leaves greedy.
        Assert.Equal(await Reply(Hot(7)), await Reply(Hot(7)));
        var samples = new HashSet<string>();
        for (int seed = 0; seed < 4; seed++) samples.Add(await Reply(Hot(seed)));
        Assert.True(samples.Count > 1 || !samples.Contains(greedy), "temperature 5 should sample, not follow argmax");
        // TopK 1 and a tiny TopP keep only the most likely token: greedy whatever the temperature.
        Assert.Equal(greedy, await Reply(new ChatOptions { MaxOutputTokens = 12, Temperature = 5f, TopK = 1, Seed = 1 }));
        Assert.Equal(greedy, await Reply(new ChatOptions { MaxOutputTokens = 12, Temperature = 5f, TopP = 1e-6f, Seed = 1 }));
    }

    [Fact]
    public async Task ModelIdSelectsAnAdapterForThatRequestOnly()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        string lora = Greedy(model, 12);
        model.SetAdapter("dora");
        string dora = Greedy(model, 12);
        string baseOnly;
        using (model.DisableAdapters()) baseOnly = Greedy(model, 12);
        model.SetAdapter("lora");
        Assert.NotEqual(lora, baseOnly);

        var dResponse = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, ModelId = "dora" });
        Assert.Equal(dora, dResponse.Text);
        Assert.Equal("dora", dResponse.ModelId);
        Assert.Equal(baseOnly, (await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12, ModelId = PeftChatClient.BaseModelId })).Text);
        // The model's own state is back as it was.
        Assert.Equal("lora", model.ActiveAdapter);
        Assert.Equal(lora, (await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 12 })).Text);
        Assert.Equal("lora", chat.GetService<ChatClientMetadata>()?.DefaultModelId);
        Assert.Same(model, chat.GetService<PeftModel>());
    }

    [Fact]
    public async Task UnknownAdapterAndUnsupportedOptionsAreClearErrors()
    {
        using var model = Model();
        IChatClient chat = model.AsChatClient();
        var e = await Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync(Conversation, new ChatOptions { ModelId = "nope" }));
        Assert.Contains("'nope' is not an adapter of this model (adapters: lora, dora", e.Message);
        var n = await Assert.ThrowsAsync<NotSupportedException>(() => chat.GetResponseAsync(Conversation, new ChatOptions { FrequencyPenalty = 1 }));
        Assert.Contains("FrequencyPenalty", n.Message);
        await Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync([]));
        Assert.Equal("lora", model.ActiveAdapter);
    }

    [Fact]
    public async Task TwoClientsOfOneModelDoNotSwitchEachOthersAdapterMidReply()
    {
        using var model = Model();
        IChatClient first = model.AsChatClient(), second = model.AsChatClient();
        var baseOnly = new ChatOptions { MaxOutputTokens = 60, ModelId = PeftChatClient.BaseModelId };
        var lora = new ChatOptions { MaxOutputTokens = 8 };
        string baseReply = (await first.GetResponseAsync(Conversation, baseOnly.Clone())).Text;
        string loraReply = (await first.GetResponseAsync(Conversation, lora.Clone())).Text;
        Assert.NotEqual(baseReply[..Math.Min(baseReply.Length, loraReply.Length)], loraReply);
        for (int round = 0; round < 3; round++)
        {
            // The first client's "base" request disables the adapters while it runs; the second client's short request,
            // started meanwhile, must still get the active adapter's reply (it waits for the model, not for its client).
            var b = first.GetResponseAsync(Conversation, baseOnly.Clone());
            var a = second.GetResponseAsync(Conversation, lora.Clone());
            Assert.Equal(loraReply, (await a).Text);
            Assert.Equal(baseReply, (await b).Text);
        }
        Assert.Equal("lora", model.ActiveAdapter);
    }
}
