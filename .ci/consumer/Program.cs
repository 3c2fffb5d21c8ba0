// The README's PeftModel snippet, as an app outside the repository writes it against the PeftSharp package
// (run by .ci/packages consumer on the tiny fixture given as the first argument).
using Microsoft.Extensions.AI;
using PeftSharp;
using static TorchSharp.torch;

string fixture = args[0];
string outDir = Path.Combine(Path.GetTempPath(), $"peftsharp-consumer-{Guid.NewGuid():N}");
try
{
    using var model = PeftModel.FromPretrained(fixture, adapter: Path.Combine(fixture, "adapters", "lora")); // any adapter kind
    long[] ids = model.Tokenizer.Encode("code red fox", addSpecialTokens: true).Select(i => (long)i).ToArray();
    using var inputIds = tensor(ids, ScalarType.Int64).unsqueeze(0);
    using (no_grad())
    {
        using var logits = model.Forward(inputIds);        // TorchSharp tensor [batch, seq, vocab]
        Console.WriteLine($"logits [{string.Join(", ", logits.shape)}]");
    }
    string text = model.Generate("code red fox", maxNewTokens: 16);   // greedy unless options say otherwise
    Console.WriteLine($"generate: {text}");
    model.AddAdapter("b", new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj", "v_proj"] });
    model.SetAdapter("b"); model.SaveAdapter("b", Path.Combine(outDir, "b"));
    string baseText;
    using (model.DisableAdapters()) { baseText = model.Generate("code red fox", maxNewTokens: 16); }
    IChatClient chat = model.AsChatClient();           // Microsoft.Extensions.AI
    ChatResponse reply = await chat.GetResponseAsync("code red fox", new ChatOptions { MaxOutputTokens = 8 });
    Console.WriteLine($"chat: {reply.Text}");
    model.MergeAndUnload(); model.SavePretrained(Path.Combine(outDir, "merged"));

    // A fresh LoRA adapter starts as the identity, so the merged model generates what the base does.
    using var merged = PeftModel.FromPretrained(Path.Combine(outDir, "merged"));
    string mergedText = merged.Generate("code red fox", maxNewTokens: 16);
    if (mergedText != baseText)
    {
        Console.Error.WriteLine($"merged model generated '{mergedText}', the base '{baseText}'");
        return 1;
    }
    if (!File.Exists(Path.Combine(outDir, "b", "adapter_config.json")))
    {
        Console.Error.WriteLine("SaveAdapter wrote no adapter_config.json");
        return 1;
    }
    Console.WriteLine("snippet ran: forward, generate, add/set/save adapter, disable, chat client, merge and save");
    return 0;
}
finally
{
    if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
}
