// Chat with a base model and its adapters through Microsoft.Extensions.AI's IChatClient: the same interface an app
// uses for OpenAI or Ollama, so swapping a local fine-tune in is one line.
using Microsoft.Extensions.AI;
using PeftSharp;

if (args.Length < 1)
{
    Console.Error.WriteLine("usage: ChatWithAdapter MODEL_DIR_OR_REPO [ADAPTER_DIR] [PROMPT]");
    return 2;
}
string modelPath = args[0];
string? adapterPath = args.Length > 1 && args[1] != "" ? args[1] : null;
string prompt = args.Length > 2 ? args[2] : "code red fox cup ->";

using var model = PeftModel.FromPretrained(modelPath, adapter: adapterPath, adapterName: "tuned");
IChatClient chat = model.AsChatClient();   // renders the conversation with the model's chat template

List<ChatMessage> conversation = [new(ChatRole.User, prompt)];
var options = new ChatOptions { MaxOutputTokens = 24 };   // greedy unless Temperature says otherwise

// ModelId picks the adapter for one request; "base" is the base model with adapters disabled.
foreach (string id in adapterPath is null ? new[] { PeftChatClient.BaseModelId } : ["tuned", PeftChatClient.BaseModelId])
{
    var perRequest = options.Clone();
    perRequest.ModelId = id;
    ChatResponse reply = await chat.GetResponseAsync(conversation, perRequest);
    // Why it ended and how many tokens it took (an empty reply is the model ending its turn at once).
    Console.WriteLine($"[{id}] {reply.Text}   ({reply.FinishReason}, {reply.Usage?.OutputTokenCount} tokens)");
}

// Streaming: the reply as it is generated.
Console.Write("[streamed] ");
await foreach (var update in chat.GetStreamingResponseAsync(conversation, options))
    Console.Write(update.Text);
Console.WriteLine();
return 0;
