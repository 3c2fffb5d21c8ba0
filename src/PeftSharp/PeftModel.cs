using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Generation;
using PeftSharp.Hub;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp;

/// <summary>
/// The front door, modelled on PEFT's <c>PeftModel</c>: a base model with its tokenizer and chat template, and its
/// adapters by name (any registered method: LoRA/DoRA/QLoRA, Houlsby, prompt tuning; see <see cref="PeftMethods"/>).
/// One adapter is active at a time (<see cref="SetAdapter"/>); <see cref="DisableAdapters"/> runs the base alone.
/// Models load in eval mode (dropout off); call <see cref="Train"/> to train.
/// </summary>
/// <remarks>
/// Threads: generations and forwards may run on several threads at once while the adapter state stays as it is.
/// <see cref="SetAdapter"/>, <see cref="DisableAdapters"/>, <see cref="LoadAdapter"/>, <see cref="AddAdapter"/>,
/// <see cref="DeleteAdapter"/>, <see cref="MergeAndUnload"/> and <see cref="Dispose"/> change what every thread's
/// forward uses: call them only when no other thread generates. Chat requests through <see cref="PeftChatClient"/>s
/// of one model run one at a time (a request's <c>ModelId</c> switches the adapter for its duration), so do not
/// generate on the model directly from another thread while chat requests with a <c>ModelId</c> run.
/// </remarks>
public sealed class PeftModel : IDisposable
{
    /// <summary>PEFT's name for an adapter loaded without one.</summary>
    public const string DefaultAdapterName = "default";

    readonly List<IPeftAdapter> _adapters = new();
    /// <summary>
    /// The chat record (<see cref="Chat.AdapterChatRecord"/>) of each adapter loaded from a folder that has one: the
    /// adapter's own Save writes PEFT's files and the base fingerprint, so <see cref="SaveAdapter"/> adds it back, and a
    /// loaded chat adapter saved again still tells serve, generate, merge and export which template it was trained with.
    /// </summary>
    readonly Dictionary<string, Chat.AdapterChatRecord> _chatRecords = new();
    readonly ChatPrompter _prompter;
    readonly PeftModelOptions _options;
    IReadOnlySet<int>? _endOfTurn;
    bool _disposed;

    /// <summary>
    /// One chat request at a time on this model, whichever <see cref="PeftChatClient"/> it comes through: a request may
    /// switch the model's adapter for its duration (<c>ChatOptions.ModelId</c>), which would change another's reply.
    /// </summary>
    internal SemaphoreSlim ChatGate { get; } = new(1, 1);

    /// <summary>The base model (the adapters live inside it).</summary>
    public CausalLM BaseModel { get; }
    /// <summary>The folder the base was loaded from (a repo id's snapshot folder).</summary>
    public string ModelPath { get; }
    /// <summary>The base's tokenizer (tokenizer.json, its special tokens and generation_config.json's EOS ids).</summary>
    public TextTokenizer Tokenizer { get; }
    /// <summary>The model's chat template (or <see cref="PeftModelOptions.ChatTemplateFile"/>), null when it has none.</summary>
    public ChatTemplate? ChatTemplate => _prompter.Template;
    /// <summary>Names of the loaded adapters, in the order they were added.</summary>
    public IReadOnlyList<string> AdapterNames => Live()._adapters.Select(a => a.Name).ToList();
    /// <summary>The adapter the forward uses, null when none is loaded.</summary>
    public string? ActiveAdapter { get; private set; }

    PeftModel(CausalLM model, TextTokenizer tokenizer, string modelPath, PeftModelOptions options)
    {
        BaseModel = model;
        Tokenizer = tokenizer;
        ModelPath = modelPath;
        _options = options;
        _prompter = ChatPrompter.ForModel(modelPath, options.ChatTemplateFile);
    }

    /// <summary>
    /// Loads a base model (a folder or a Hub repo id ORG/NAME[@REVISION]) and, when given, the adapter a folder or repo
    /// holds, whatever its method (read from its adapter_config.json's peft_type), as adapter <paramref name="adapterName"/>.
    /// </summary>
    public static PeftModel FromPretrained(string model, string? adapter = null, string adapterName = DefaultAdapterName, PeftModelOptions? options = null)
    {
        options ??= new PeftModelOptions();
        string folder = ModelLocation.Resolve(model, "model", options.Hub);
        var load = new LoadOptions
        {
            Dtype = options.Dtype,
            Device = options.Device,
            Quantizer = options.LoadIn4Bit is { } nf4 ? new Nf4Quantizer(nf4) : null,
        };
        var causal = ModelLoader.Load(folder, load);
        TextTokenizer? tokenizer = null;
        try
        {
            tokenizer = TextTokenizer.FromFolder(folder, causal.Config);
            causal.eval();
            var peft = new PeftModel(causal, tokenizer, folder, options);
            if (adapter is not null) peft.LoadAdapter(adapter, adapterName);
            return peft;
        }
        catch
        {
            tokenizer?.Dispose();
            causal.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads the adapter a folder (or Hub repo) holds as <paramref name="adapterName"/>; it becomes the active adapter
    /// when none was active. Its recorded base fingerprint must match this base (see <see cref="PeftModelOptions.AllowBaseMismatch"/>).
    /// </summary>
    public void LoadAdapter(string adapter, string adapterName)
    {
        ThrowIfDisposed();
        RequireNewName(adapterName);
        string dir = ModelLocation.Resolve(adapter, "adapter", _options.Hub);
        var method = PeftMethods.ForFolder(dir);
        var record = Chat.AdapterChatRecord.Read(dir);
        var loaded = method.Load(BaseModel, dir, adapterName, new AdapterLoadOptions { AllowBaseMismatch = _options.AllowBaseMismatch, Trainable = _options.IsTrainable });
        Added(loaded);
        if (record is not null) _chatRecords[adapterName] = record;
    }

    /// <summary>
    /// Adds a fresh, trainable adapter made from <paramref name="config"/> (a <c>LoraConfig</c>, <c>HoulsbyConfig</c>,
    /// <c>PromptTuningConfig</c>, ...); it becomes the active adapter when none was active (PEFT's add_adapter).
    /// </summary>
    public IPeftAdapter AddAdapter(string adapterName, IPeftConfig config, int seed = 0)
    {
        ThrowIfDisposed();
        RequireNewName(adapterName);
        var method = PeftMethods.ForConfig(config);
        var added = method.Attach(BaseModel, config, adapterName, new AttachOptions { Seed = seed, Encode = text => Tokenizer.Encode(text, addSpecialTokens: true) });
        Added(added);
        return added;
    }

    /// <summary>The adapter named <paramref name="adapterName"/> (its parameters, config and method).</summary>
    public IPeftAdapter GetAdapter(string adapterName) => Live()._adapters.FirstOrDefault(a => a.Name == adapterName)
        ?? throw new KeyNotFoundException($"no adapter named '{adapterName}' (loaded: {string.Join(", ", _adapters.Select(a => a.Name).DefaultIfEmpty("none"))})");

    /// <summary>Makes <paramref name="adapterName"/> the only adapter the forward uses.</summary>
    public void SetAdapter(string adapterName)
    {
        ThrowIfDisposed();
        GetAdapter(adapterName);
        foreach (var a in _adapters) a.Active = a.Name == adapterName;
        ActiveAdapter = adapterName;
    }

    /// <summary>
    /// Removes an adapter from the model and frees its parameters. A PiSSA adapter is refused: it replaced the base
    /// weights it adapts by their residual, which deleting it would leave behind.
    /// </summary>
    /// <exception cref="InvalidOperationException">The adapter is a PiSSA adapter (message: its name and what to do instead).</exception>
    public void DeleteAdapter(string adapterName)
    {
        ThrowIfDisposed();
        var a = GetAdapter(adapterName);
        // PEFT's delete_adapter drops lora_A/lora_B and leaves the base as pissa_init rewrote it (W minus the principal
        // part), so the model silently computes with a base that is no longer the checkpoint's. Putting W back bit for
        // bit needs the original weights (W - BA + BA rounds differently, and fingerprints compare bytes): refused.
        if (a is Tuners.Lora.LoraPeftAdapter { Adapter.IsPissa: true } pissa)
            throw new InvalidOperationException($"adapter '{adapterName}' is a PiSSA adapter: it replaced the base weights of its " +
                $"{pissa.Adapter.Layers.Count} module(s) by their residual, which deleting it would leave as the base; " +
                "merge it (MergeAndUnload) or load the base model again instead");
        a.Dispose();
        _adapters.Remove(a);
        _chatRecords.Remove(adapterName);
        if (ActiveAdapter == adapterName) ActiveAdapter = null;
    }

    /// <summary>
    /// Writes an adapter folder PEFT loads (adapter_config.json + adapter_model.safetensors), atomically; an adapter
    /// loaded from a folder that records the chat template it was trained with keeps that record in the new folder.
    /// </summary>
    public void SaveAdapter(string adapterName, string dir)
    {
        GetAdapter(adapterName).Save(dir);
        if (_chatRecords.TryGetValue(adapterName, out var record)) record.Write(dir);
    }

    /// <summary>The base model alone until the returned scope is disposed (PEFT's <c>with model.disable_adapter():</c>).</summary>
    public IDisposable DisableAdapters()
    {
        ThrowIfDisposed();
        bool before = BaseModel.State.Disabled;
        BaseModel.State.Disabled = true;
        return new Restore(() => BaseModel.State.Disabled = before);
    }

    /// <summary>
    /// Folds the active adapter into the base weights and removes every adapter (PEFT's merge_and_unload); afterwards
    /// this is a plain model and <see cref="SavePretrained"/> writes a full model folder. A method that cannot merge
    /// (Houlsby, prompt tuning) or a quantised base is refused before anything changes.
    /// </summary>
    public void MergeAndUnload()
    {
        ThrowIfDisposed();
        var active = _adapters.Where(a => a.Active).ToList();
        foreach (var a in active)
            if (a.CannotMergeReason is { } why) throw new NotSupportedException($"cannot merge adapter '{a.Name}' ({a.Method.PeftType}): {why}");
        foreach (var a in active) a.MergeAndUnload();
        foreach (var a in _adapters.Except(active)) a.Dispose();
        _adapters.Clear();
        ActiveAdapter = null;
    }

    /// <summary>
    /// As PEFT's save_pretrained: with adapters loaded, each adapter folder (the "default" adapter in
    /// <paramref name="dir"/>, any other in <paramref name="dir"/>/NAME); after <see cref="MergeAndUnload"/>, the whole
    /// model as a Hugging Face folder next to the base's files (config, tokenizer, ...), which loads wherever the base does.
    /// </summary>
    public void SavePretrained(string dir)
    {
        ThrowIfDisposed();
        if (_adapters.Count == 0)
        {
            MergedModelWriter.Write(BaseModel, ModelPath, dir);
            return;
        }
        foreach (var a in _adapters)
            a.Save(a.Name == DefaultAdapterName ? dir : Path.Combine(dir, a.Name));
    }

    /// <summary>Logits [batch, seq, vocab] for token ids [batch, seq] (int64), with the active adapter; the caller disposes them.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null)
    {
        ThrowIfDisposed();
        var ids = inputIds.to(ScalarType.Int64, BaseModel.Device);
        var mask = attentionMask?.to(BaseModel.Device);
        try { return BaseModel.Forward(ids, attentionMask: mask); }
        finally
        {
            // `to` may hand back the caller's own tensor when nothing changes: free only what was made here.
            if (!ReferenceEquals(ids, inputIds)) ids.Dispose();
            if (mask is not null && !ReferenceEquals(mask, attentionMask)) mask.Dispose();
        }
    }

    /// <summary>
    /// As HF's <c>model.generate(input_ids)</c>: the prompt ids [1, T] followed by the generated ids (int64, on CPU; EOS
    /// and stop ids are not included). The caller disposes the result.
    /// </summary>
    public Tensor Generate(Tensor inputIds, GenerationOptions? options = null)
    {
        ThrowIfDisposed();
        if (inputIds.dim() != 2 || inputIds.shape[0] != 1) throw new ArgumentException($"input ids must be [1, T] (one sequence), got [{string.Join(", ", inputIds.shape)}]");
        using var cpu = inputIds.to(ScalarType.Int64, CPU);
        var prompt = cpu.data<long>().Select(i => (int)i).ToArray();
        options ??= new GenerationOptions();
        var stopIds = Tokenizer.StopIds(BaseModel.Config).Concat(options.StopTokenIds).ToHashSet();
        var generated = TextGenerator.Generate(BaseModel, prompt, options.ToSampling(), stopIds).TakeWhile(id => !stopIds.Contains(id));
        // unsqueeze hands back a new tensor: the flat one is freed here, or every call leaves one behind for the finalizer.
        using var flat = tensor(prompt.Concat(generated).Select(i => (long)i).ToArray());
        return flat.unsqueeze(0);
    }

    /// <summary>The continuation of <paramref name="prompt"/> (encoded as HF's <c>tokenizer(prompt)</c>), greedy unless options say otherwise.</summary>
    public string Generate(string prompt, int? maxNewTokens = null, GenerationOptions? options = null)
    {
        ThrowIfDisposed();
        options ??= new GenerationOptions();
        if (maxNewTokens is int n) options = options with { MaxNewTokens = n };
        return string.Concat(GenerateStream(prompt, options));
    }

    /// <summary>The continuation of a text prompt as text pieces, streamed (their concatenation is the whole continuation).</summary>
    public IEnumerable<string> GenerateStream(string prompt, GenerationOptions? options = null)
    {
        ThrowIfDisposed();
        var ids = Tokenizer.Encode(prompt, addSpecialTokens: true);
        if (ids.Length == 0) throw new ArgumentException("the prompt is empty and this tokenizer adds no BOS to start from");
        return GenerateStream(ids, options);
    }

    /// <summary>
    /// The continuation of prompt token ids (e.g. <see cref="EncodeChat"/>'s) as text pieces: decode(prompt + generated)
    /// minus decode(prompt), streamed as Hugging Face's TextStreamer means it.
    /// </summary>
    public IEnumerable<string> GenerateStream(IReadOnlyList<int> promptIds, GenerationOptions? options = null) =>
        GenerateUpdates(promptIds, options).Where(u => u.Text.Length > 0).Select(u => u.Text);

    /// <summary>
    /// As <see cref="GenerateStream(IReadOnlyList{int}, GenerationOptions?)"/>, then one last item (empty text) with the
    /// finish reason and the token counts, what a chat client reports as finish_reason and usage.
    /// </summary>
    public IEnumerable<GenerationUpdate> GenerateUpdates(IReadOnlyList<int> promptIds, GenerationOptions? options = null)
    {
        ThrowIfDisposed();
        options ??= new GenerationOptions();
        var sampling = options.ToSampling();
        var stopIds = Tokenizer.StopIds(BaseModel.Config).Concat(options.StopTokenIds).ToHashSet();
        // An empty stop sequence stops nothing (OpenAI's server refuses it; here it is ignored, as before).
        return Stream(promptIds, sampling, stopIds, options.StopSequences.Where(s => s.Length > 0).ToList());
    }

    IEnumerable<GenerationUpdate> Stream(IReadOnlyList<int> promptIds, SamplingOptions sampling, IReadOnlySet<int> stopIds, IReadOnlyList<string> stops)
    {
        var text = new GeneratedText(new TextStreamer(Tokenizer, promptIds), stopIds, stops);
        using var ids = TextGenerator.Generate(BaseModel, promptIds, sampling, stopIds).GetEnumerator();
        // Checked before each step: a stream still being read when the model is disposed ends with ObjectDisposedException,
        // not with whatever the next forward on the freed weights does.
        while (NextId(ids) is int id)
        {
            string piece = text.Push(id);
            if (piece.Length > 0) yield return new GenerationUpdate { Text = piece };
            if (text.Ended) break;
        }
        string rest = text.Flush();
        if (rest.Length > 0) yield return new GenerationUpdate { Text = rest };
        // A stop sequence completed by the held-back tail is a stop too.
        var reason = text.Ended ? GenerationFinishReason.Stop : GenerationFinishReason.Length;
        yield return new GenerationUpdate { FinishReason = reason, InputTokens = promptIds.Count, OutputTokens = text.Tokens };
    }

    int? NextId(IEnumerator<int> ids)
    {
        ThrowIfDisposed();
        return ids.MoveNext() ? ids.Current : null;
    }

    /// <summary>A conversation rendered with the model's chat template (PeftSharp's simple format when it has none).</summary>
    public string ApplyChatTemplate(IReadOnlyList<JsonObject> messages, bool addGenerationPrompt = true) => Live()._prompter.Render(messages, addGenerationPrompt);

    /// <inheritdoc cref="ApplyChatTemplate(IReadOnlyList{JsonObject}, bool)"/>
    public string ApplyChatTemplate(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt = true) =>
        ApplyChatTemplate(messages.Select(m => new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToList(), addGenerationPrompt);

    /// <summary>
    /// The prompt ids of a conversation: rendered with the template and its generation prompt, encoded as HF's
    /// apply_chat_template(tokenize=True) does (the rendered text holds its special tokens, so none are added).
    /// </summary>
    public int[] EncodeChat(IEnumerable<(string Role, string Content)> messages) =>
        Tokenizer.Encode(ApplyChatTemplate(messages), addSpecialTokens: ChatTemplate is null);

    /// <summary>The ids that end an assistant turn in the chat template (generation on a chat prompt stops on them too).</summary>
    public IReadOnlySet<int> EndOfTurnIds => Live()._endOfTurn ??= _prompter.EndOfTurnIds(Tokenizer).ToHashSet();

    /// <summary>Training mode (dropout on), as PyTorch's <c>model.train()</c>.</summary>
    public void Train() => Live().BaseModel.train();

    /// <summary>Evaluation mode (dropout off), as PyTorch's <c>model.eval()</c>; models load in this mode.</summary>
    public void Eval() => Live().BaseModel.eval();

    /// <summary>Frees the adapters, the base model's tensors and the tokenizer; again is a no-op.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var a in _adapters) a.Dispose();
        _adapters.Clear();
        BaseModel.Dispose();
        Tokenizer.Dispose();
    }

    // Every member that reaches the freed tensors or tokenizer checks this first: a disposed model fails with one clear
    // exception, not with whatever the freed native objects happen to do (a write of stale weights, "empty handle").
    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    PeftModel Live()
    {
        ThrowIfDisposed();
        return this;
    }

    void RequireNewName(string name)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("an adapter name must not be empty");
        if (_adapters.Any(a => a.Name == name)) throw new ArgumentException($"adapter '{name}' already exists on this model");
    }

    void Added(IPeftAdapter adapter)
    {
        _adapters.Add(adapter);
        // Loading may have switched the model's LoRA activation; the active adapter stays the one chosen (or the first).
        SetAdapter(ActiveAdapter ?? adapter.Name);
    }

    sealed class Restore(Action undo) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            undo();
        }
    }
}
