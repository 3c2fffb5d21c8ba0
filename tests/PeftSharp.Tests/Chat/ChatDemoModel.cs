using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Chat;

/// <summary>
/// A tiny template-bearing model made from the bundled demo base: its WordLevel vocabulary gains the ChatML role words
/// (user, assistant, system) and the special tokens &lt;|im_start|&gt; and &lt;|im_end|&gt;, its embedding and output rows
/// grow to match (new rows copied from existing ones: both specials from &lt;|endoftext|&gt;, which the base already
/// predicts after an answer), &lt;|im_end|&gt; becomes an eos_token_id, and tokenizer_config.json carries SmolLM's ChatML template.
/// With <c>endOfTurnIsEos: false</c> the only EOS is &lt;|endoftext|&gt;, so the template's end-of-turn differs from
/// EOS, as Llama-3.x's &lt;|eot_id|&gt; and Gemma's &lt;end_of_turn&gt; do.
/// </summary>
public static class ChatDemoModel
{
    public const string Template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    public static string DemoBase => Path.Combine(TestPaths.RepoRoot, "assets", "demo", "base");

    public static string Build(string outDir, bool endOfTurnIsEos = true)
    {
        Directory.CreateDirectory(outDir);
        var tokenizer = JsonFile.ReadObject(Path.Combine(DemoBase, "tokenizer.json"));
        var vocab = tokenizer["model"]!["vocab"]!.AsObject();
        var config = JsonFile.ReadObject(Path.Combine(DemoBase, "config.json"));
        // New ids follow the last one in use (the base's spare embedding rows beyond it are dropped): HF tokenizers
        // numbers added tokens after the vocabulary, so a gap would shift their ids.
        int firstNew = vocab.Select(p => p.Value!.GetValue<int>()).Concat(tokenizer["added_tokens"]!.AsArray().Select(t => t!["id"]!.GetValue<int>())).Max() + 1;
        int next = firstNew;
        int endOfText = vocab["<|endoftext|>"]!.GetValue<int>();
        // new id -> the existing row it starts from
        var copies = new List<int>();
        foreach (var word in new[] { "user", "assistant", "system" })
        {
            vocab[word] = next++;
            copies.Add(vocab["code"]!.GetValue<int>());
        }
        var added = tokenizer["added_tokens"]!.AsArray();
        var specialIds = new Dictionary<string, int>();
        foreach (var special in new[] { "<|im_start|>", "<|im_end|>" })
        {
            specialIds[special] = next;
            added.Add(new JsonObject { ["id"] = next++, ["content"] = special, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
            copies.Add(endOfText);
        }
        File.WriteAllText(Path.Combine(outDir, "tokenizer.json"), tokenizer.ToJsonString());

        config["vocab_size"] = next;
        config["eos_token_id"] = endOfTurnIsEos ? new JsonArray(specialIds["<|im_end|>"], endOfText) : endOfText;
        File.WriteAllText(Path.Combine(outDir, "config.json"), config.ToJsonString());
        File.WriteAllText(Path.Combine(outDir, "tokenizer_config.json"), new JsonObject
        {
            ["chat_template"] = Template,
            ["eos_token"] = endOfTurnIsEos ? "<|im_end|>" : "<|endoftext|>",
            ["pad_token"] = "<|endoftext|>",
            ["unk_token"] = "<unk>",
        }.ToJsonString());

        int imEnd = specialIds["<|im_end|>"];
        using var scope = NewDisposeScope();
        using var file = new SafeTensorsFile(Path.Combine(DemoBase, "model.safetensors"));
        var index = tensor(copies.Select(i => (long)i).ToArray());
        var tensors = file.Tensors.Select(t =>
        {
            var x = file.Load(t.Name);
            if (t.Name is "model.embed_tokens.weight" or "lm_head.weight") x = cat([x[..firstNew], x.index_select(0, index)], 0);
            // <|im_end|>'s output row is <|endoftext|>'s scaled by 1.1, so where the base would end a text it now
            // prefers to end the turn (identical rows would tie, and argmax would pick <|endoftext|>).
            if (t.Name is "lm_head.weight") x[imEnd] = x[endOfText].Times(1.1);
            return (t.Name, x);
        }).ToList();
        SafeTensorsWriter.Write(Path.Combine(outDir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        return outDir;
    }
}
