using PeftSharp.Chat;
using PeftSharp.IO.Gguf;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `peft export ollama`: the folder `ollama create` takes (GGUF + Modelfile), the chat-template family found by
/// rendering the model's own Jinja template (real published templates from ../shared), and bad input refused with
/// nothing written. The family renderings are those of ollama's template/testdata files.
/// </summary>
[Collection("console")]
public class ExportOllamaTests(ITestOutputHelper output)
{
    const string ChatmlJinja = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// <summary>A copy of the tiny llama fixture with <paramref name="jinja"/> as its chat_template.jinja.</summary>
    static string TinyWithTemplate(string? jinja)
    {
        string dir = TestPaths.TempDir();
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json" })
            File.Copy(Path.Combine(TestPaths.TinyLlama, f), Path.Combine(dir, f));
        if (jinja is not null) File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), jinja);
        return dir;
    }

    [Fact]
    public void ChatmlModel_WritesGgufAndTheGoldenModelfile()
    {
        string model = TinyWithTemplate(ChatmlJinja);
        string outDir = Path.Combine(TestPaths.TempDir(), "tiny-chat");
        var (code, stdout, err) = CliCapture.Run("export", "ollama", "--model", model, "--out", outDir, "--type", "q8_0");
        Assert.True(code == 0, err);
        Assert.Equal(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "gguf", "ollama", "chatml.Modelfile")), File.ReadAllText(Path.Combine(outDir, "Modelfile")));
        Assert.Contains($"ollama create tiny-chat -f {Path.Combine(outDir, "Modelfile")}", stdout);
        Assert.Equal(["Modelfile", "model.gguf"], Directory.GetFiles(outDir).Select(Path.GetFileName).Order());
        using var r = new GgufReader(Path.Combine(outDir, "model.gguf"));
        Assert.Equal((ulong)GgufFileType.MostlyQ8_0, r.GetUInt("general.file_type"));
        Assert.Equal(ChatmlJinja, r.GetString("tokenizer.chat_template"));
        Assert.Equal([outDir], Directory.GetFileSystemEntries(Path.GetDirectoryName(outDir)!)); // no staging folder left
    }

    /// <summary>The README's LLamaSharp snippet, on an exported model.gguf: it loads and generates.</summary>
    [Fact]
    public async Task ReadmeLLamaSharpSnippet_RunsTheExport()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "snippet");
        var (code, _, err) = CliCapture.Run("export", "ollama", "--model", TinyWithTemplate(ChatmlJinja), "--out", outDir);
        Assert.True(code == 0, err);
        string gguf = Path.Combine(outDir, "model.gguf");
        using (new LlamaCpp(gguf, 16)) { } // loads the native library with the tests' log settings first
        var p = new LLama.Common.ModelParams(gguf) { ContextSize = 128, GpuLayerCount = 0, Threads = 1, BatchThreads = 1 };
        using var weights = LLama.LLamaWeights.LoadFromFile(p);
        var executor = new LLama.StatelessExecutor(weights, p);
        var produced = new List<string>();
        await foreach (var piece in executor.InferAsync("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
                           new LLama.Common.InferenceParams { MaxTokens = 4, AntiPrompts = ["<|im_end|>"] }))
            produced.Add(piece);
        Assert.NotEmpty(produced);
    }

    [Fact]
    public void UnknownTemplate_NoTemplateLineAndAWarning()
    {
        string model = TinyWithTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}");
        string outDir = Path.Combine(TestPaths.TempDir(), "plain");
        var (code, _, err) = CliCapture.Run("export", "ollama", "--model", model, "--out", outDir, "--type", "f16");
        Assert.True(code == 0, err);
        Assert.Equal("FROM ./model.gguf\nPARAMETER stop \"<|endoftext|>\"\n", File.ReadAllText(Path.Combine(outDir, "Modelfile")));
        Assert.Contains("chat template is not one of the known families", err);
        // Ollama renders no Jinja: with no TEMPLATE it picks a built-in Go template by edit distance to the GGUF's
        // chat_template, else {{ .Prompt }} (ollama template/template.go Named, DefaultTemplate).
        Assert.Contains("Ollama does not run the GGUF's Jinja tokenizer.chat_template", err);
        Assert.Contains("add a TEMPLATE line by hand", err);
    }

    [Fact]
    public void SeparateAdapter_WritesBaseAdapterAndAdapterLine()
    {
        string adapter = Path.Combine(TestPaths.TinyLlama, "adapters", "lora");
        string outDir = Path.Combine(TestPaths.TempDir(), "sep");
        var (code, _, err) = CliCapture.Run("export", "ollama", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", outDir, "--type", "f32", "--separate-adapter");
        Assert.True(code == 0, err);
        Assert.Equal("FROM ./model.gguf\nADAPTER ./adapter.gguf\nPARAMETER stop \"<|endoftext|>\"\n", File.ReadAllText(Path.Combine(outDir, "Modelfile")));
        using var a = new GgufReader(Path.Combine(outDir, "adapter.gguf"));
        Assert.Equal("adapter", a.GetString("general.type"));
        using var m = new GgufReader(Path.Combine(outDir, "model.gguf"));
        Assert.Equal("model", m.GetString("general.type"));
    }

    /// <summary>
    /// An adapter trained with --chat-template on a base without one: its exports carry that template as `peft merge`
    /// does (before, the GGUF had no tokenizer.chat_template and the Modelfile no TEMPLATE, so Ollama and llama.cpp
    /// prompted the fine-tune in a format it never saw), merged and beside a separate ADAPTER alike.
    /// </summary>
    [Fact]
    public void AdapterTrainedWithATemplate_ExportsCarryIt()
    {
        string dir = TestPaths.TempDir(), model = TinyWithTemplate(null), template = Path.Combine(dir, "chatml.jinja"), data = Path.Combine(dir, "chat.jsonl");
        File.WriteAllText(template, ChatmlJinja);
        File.WriteAllText(data, """{"messages": [{"role": "user", "content": "abc"}, {"role": "assistant", "content": "cba"}]}""" + "\n");
        var train = CliCapture.Run("train", "--model", model, "--data", data, "--chat-template", template, "--method", "lora", "--steps", "1",
            "--batch", "1", "--max-seq", "64", "--out", Path.Combine(dir, "run"));
        Assert.True(train.Code == 0, train.Err);
        string adapter = Path.Combine(dir, "run", "final");

        string gguf = Path.Combine(dir, "merged.gguf");
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", model, "--adapter", adapter, "--out", gguf, "--type", "f32");
        Assert.True(code == 0, err);
        using (var r = new GgufReader(gguf)) Assert.Equal(File.ReadAllText(template), r.GetString("tokenizer.chat_template"));

        string golden = File.ReadAllText(Path.Combine(TestPaths.Fixtures, "gguf", "ollama", "chatml.Modelfile"));
        foreach (var separate in new[] { false, true })
        {
            string outDir = Path.Combine(dir, separate ? "sep" : "merged");
            (code, _, err) = CliCapture.Run(["export", "ollama", "--model", model, "--adapter", adapter, "--out", outDir, "--type", "f32", .. separate ? new[] { "--separate-adapter" } : []]);
            Assert.True(code == 0, err);
            Assert.DoesNotContain("warning", err);
            Assert.Equal(separate ? golden.Replace("FROM ./model.gguf\n", "FROM ./model.gguf\nADAPTER ./adapter.gguf\n") : golden, File.ReadAllText(Path.Combine(outDir, "Modelfile")));
            using var m = new GgufReader(Path.Combine(outDir, "model.gguf"));
            Assert.Equal(File.ReadAllText(template), m.GetString("tokenizer.chat_template"));
        }
    }

    /// <summary>
    /// An adapter folder that carries its template as transformers saves a tokenizer (tokenizer_config.json's
    /// chat_template, or chat_template.jinja), not in a PeftSharp chat record: `export ollama --separate-adapter` carries it
    /// as it does a recorded one (before, the Modelfile had no TEMPLATE, the GGUF none, and nothing was said), and
    /// `generate` on a base with another template warns, as `export gguf-adapter` already did.
    /// </summary>
    [Theory]
    [InlineData("tokenizer_config.json")]
    [InlineData("chat_template.jinja")]
    public void AdapterWithATemplateSavedInItsFolder_CountsEverywhere(string file)
    {
        string dir = TestPaths.TempDir(), adapter = Path.Combine(dir, "adapter");
        Directory.CreateDirectory(adapter);
        foreach (var f in Directory.GetFiles(Path.Combine(TestPaths.TinyLlama, "adapters", "lora"))) File.Copy(f, Path.Combine(adapter, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(adapter, file), file.EndsWith(".json")
            ? new System.Text.Json.Nodes.JsonObject { ["chat_template"] = ChatmlJinja }.ToJsonString() : ChatmlJinja);

        string outDir = Path.Combine(dir, "sep"), model = TinyWithTemplate(null);
        var (code, _, err) = CliCapture.Run("export", "ollama", "--model", model, "--adapter", adapter, "--out", outDir, "--type", "f32", "--separate-adapter");
        Assert.True(code == 0, err);
        string golden = File.ReadAllText(Path.Combine(TestPaths.Fixtures, "gguf", "ollama", "chatml.Modelfile"));
        Assert.Equal(golden.Replace("FROM ./model.gguf\n", "FROM ./model.gguf\nADAPTER ./adapter.gguf\n"), File.ReadAllText(Path.Combine(outDir, "Modelfile")));
        using (var m = new GgufReader(Path.Combine(outDir, "model.gguf"))) Assert.Equal(ChatmlJinja, m.GetString("tokenizer.chat_template"));

        // A base with its own, different template: generate says the adapter's differs, naming the file it came from.
        string other = TinyWithTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}");
        (code, _, err) = CliCapture.Run("generate", "--model", other, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.True(code == 0, err);
        Assert.Contains($"warning: {adapter} was trained with chat template {Path.Combine(adapter, file)}", err);
    }

    [Fact]
    public void BadInput_OneLineNothingWritten()
    {
        string parent = TestPaths.TempDir();
        void AssertRefused(string expected, params string[] args)
        {
            var (code, _, err) = CliCapture.Run(["export", "ollama", .. args, "--out", Path.Combine(parent, "o")]);
            Assert.Equal(1, code);
            Assert.Contains(expected, err);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Empty(Directory.GetFileSystemEntries(parent));
        }
        string dora = Path.Combine(TestPaths.TinyLlama, "adapters", "dora");
        AssertRefused("adapter_config.json: a DoRA adapter has no llama.cpp adapter form; use `peft export gguf --adapter", "--model", TestPaths.TinyLlama, "--adapter", dora, "--separate-adapter");
        AssertRefused("--type 'q2_k' is not supported", "--model", TestPaths.TinyLlama, "--type", "q2_k");
        AssertRefused("--separate-adapter needs exactly one --adapter (got 0)", "--model", TestPaths.TinyLlama, "--separate-adapter");
        string phi = RandomModel.Write(RandomModel.Phi3Config(longRope: true));
        AssertRefused($"{Path.Combine(phi, "config.json")}: rope_scaling type 'longrope' cannot be exported to GGUF yet", "--model", phi);
    }

    /// <summary>Published templates (../shared) are found as the family Ollama would use for them.</summary>
    [Theory]
    [InlineData("qwen25-05b-instruct-lora", "chatml")]
    [InlineData("smollm135m-medflash-lora", "chatml")]
    [InlineData("tinyllama-chat-tokenizer", "zephyr")]
    [InlineData("llama-2-chat-template", "llama2")]
    [InlineData("mistral-7b-instruct-v0.1-chat-template", "mistral")]
    public void RealTemplates_AreDetected(string fixture, string family)
    {
        string? dir = RealFixtures.Folder(fixture, output);
        if (dir is null) return;
        var template = ChatTemplate.Load(dir);
        Assert.NotNull(template);
        Assert.Equal(family, OllamaModelfile.Detect(template!)?.Family.Name);
    }

    /// <summary>
    /// Qwen2.5's template puts "You are Qwen, ..." in when a chat has no system turn; the chatml Go template does not, so
    /// without a SYSTEM line Ollama rendered such chats (most chats) without it, unlike the HF template the model was
    /// trained and is served with. Ollama prepends the Modelfile's SYSTEM to a chat that starts without one.
    /// </summary>
    [Fact]
    public void TemplateWithADefaultSystemText_ItIsTheModelfilesSystem()
    {
        const string qwenLike = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}" +
            "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}" +
            "{%- for message in messages %}{%- if message.role != 'system' %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}" +
            "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
        string model = TinyWithTemplate(qwenLike);
        string outDir = Path.Combine(TestPaths.TempDir(), "qwen-like");
        var (code, stdout, err) = CliCapture.Run("export", "ollama", "--model", model, "--out", outDir, "--type", "f16");
        Assert.True(code == 0, err);
        string golden = File.ReadAllText(Path.Combine(TestPaths.Fixtures, "gguf", "ollama", "chatml.Modelfile"));
        string expected = golden.Replace("PARAMETER stop \"<|im_end|>\"", "SYSTEM \"\"\"You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\"\"\"\nPARAMETER stop \"<|im_end|>\"");
        Assert.Equal(expected, File.ReadAllText(Path.Combine(outDir, "Modelfile")));
        Assert.Contains("default system text as SYSTEM", stdout);
    }

    /// <summary>The real Qwen2.5-Instruct template (../shared): chatml, with its default system text.</summary>
    [Fact]
    public void RealQwenTemplate_ChatmlWithItsDefaultSystem()
    {
        string? dir = RealFixtures.Folder("qwen25-05b-instruct-lora", output);
        if (dir is null) return;
        var detected = OllamaModelfile.Detect(ChatTemplate.Load(dir)!);
        Assert.Equal("chatml", detected?.Family.Name);
        Assert.Equal("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", detected?.DefaultSystem);
    }

    /// <summary>Ollama's Modelfile parser strips a value's quotes and unescapes nothing (ollama parser/parser.go, unquote).</summary>
    [Fact]
    public void StopTexts_AreWrittenAsOllamaReadsThem()
    {
        string text = OllamaModelfile.Write("model.gguf", null, null, ["a\\b", "say \"hi\""]);
        Assert.Equal("FROM ./model.gguf\nPARAMETER stop \"a\\b\"\nPARAMETER stop \"say \"hi\"\"\n", text);
    }

    /// <summary>Each family's probe rendering is recognised (a template that renders exactly that text), and nothing else is.</summary>
    [Fact]
    public void EveryFamily_IsDetectedFromItsRendering()
    {
        foreach (var f in OllamaModelfile.Families)
        {
            // A Jinja template that outputs the family's rendering of whatever conversation it is given has the same
            // rendering of the probe; the probe texts are distinct, so the system turn decides which one applies.
            string jinja = "{% if messages[0]['role'] == 'system' %}{{ withSystem }}{% else %}{{ without }}{% endif %}";
            var t = new ChatTemplate(jinja.Replace("{{ withSystem }}", Literal(f.WithSystem)).Replace("{{ without }}", Literal(f.WithoutSystem)), new Dictionary<string, string>(), f.Name);
            Assert.Equal(f.Name, OllamaModelfile.Detect(t)?.Family.Name);
            Assert.Null(OllamaModelfile.Detect(t)?.DefaultSystem);
        }
        Assert.Null(OllamaModelfile.Detect(new ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}", new Dictionary<string, string>(), "plain")));
    }

    static string Literal(string s) => "{{ " + System.Text.Json.JsonSerializer.Serialize(s,
        new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + " }}";
}
