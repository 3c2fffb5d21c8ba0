using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PromptTuning;

/// <summary>
/// Soft prompt: a [N, hidden] parameter prepended to the token embeddings, saved as PEFT's "prompt_embeddings".
/// The base weights are untouched; once <see cref="AttachTo"/> a model, it is that model's input-embeddings hook, so
/// every forward (training, eval, generation) puts it before the tokens and the logits stay those of the tokens.
/// </summary>
internal sealed class PromptEmbeddings : IDisposable, IInputEmbeddingsHook
{
    public Parameter Embeddings { get; }
    public PromptTuningConfig Config { get; }
    public int Count => Config.NumVirtualTokens;
    /// <summary>Whether the forward uses the soft prompt (PeftModel's active adapter); the model's disabled flag wins too.</summary>
    public bool Active { get; set; } = true;
    CausalLM? _model;

    /// <summary>Makes this the model's input-embeddings hook (one soft prompt per model).</summary>
    public PromptEmbeddings AttachTo(CausalLM model)
    {
        if (model.InputEmbeddingsHook is not null && model.InputEmbeddingsHook != this)
            throw new InvalidOperationException("the model already has a soft prompt (prompt-tuning adapter); delete it first");
        model.InputEmbeddingsHook = this;
        _model = model;
        return this;
    }

    public (Tensor Embeds, Tensor? AttentionMask, int Prepended) Apply(Tensor embeds, Tensor? attentionMask)
    {
        if (!Active || _model is { State.Disabled: true }) return (embeds, attentionMask, 0);
        var prefix = Embeddings.unsqueeze(0).expand(embeds.shape[0], -1, -1).to_type(embeds.dtype);
        var mask = attentionMask is null ? null : cat([ones(attentionMask.shape[0], Count, attentionMask.dtype, attentionMask.device), attentionMask], 1);
        return (cat([prefix, embeds], 1), mask, Count);
    }

    PromptEmbeddings(Parameter p, PromptTuningConfig cfg) { Embeddings = p; Config = cfg; }

    /// <summary>Initialises randomly, from sampled vocabulary embeddings, or from the embeddings of a text (repeated/cut to N, as PEFT).</summary>
    public static PromptEmbeddings Create(CausalLM model, PromptTuningConfig cfg, Func<string, int[]>? encode = null, int seed = 0)
    {
        cfg.Validate();
        var g = new TorchSharp.torch.Generator((ulong)seed);
        var emb = model.model.embed_tokens.weight;
        int n = cfg.NumVirtualTokens;
        using var scope = NewDisposeScope();
        Tensor init;
        using (no_grad())
        {
            switch (cfg.Init)
            {
                case PromptInit.Random:
                    init = randn([n, emb.shape[1]], emb.dtype, emb.device, generator: g).Times(emb.std().item<float>());
                    break;
                case PromptInit.SampleVocab:
                    init = emb.index_select(0, randint(0, emb.shape[0], [n], generator: g).to(emb.device)).clone();
                    break;
                default:
                    var ids = (encode ?? throw new ArgumentException("TEXT init needs a tokenizer")) (cfg.InitText!);
                    if (ids.Length == 0) throw new ArgumentException("prompt_tuning_init_text encodes to no tokens");
                    var idx = Enumerable.Range(0, n).Select(i => (long)ids[i % ids.Length]).ToArray();
                    init = emb.index_select(0, tensor(idx, device: emb.device)).clone();
                    break;
            }
        }
        var p = new Parameter(init.detach().MoveToOuterDisposeScope(), requires_grad: true);
        return new PromptEmbeddings(p, cfg);
    }

    public void Save(CausalLM model, string dir, string baseModel = "")
    {
        var c = model.Config;
        AdapterFolderWriter.Write(dir, Config.ToJson(c.HiddenSize, c.NumLayers, c.NumHeads, baseModel), FingerprintOf(model),
            [SafeTensorEntry.FromTensor("prompt_embeddings", Embeddings)]);
    }

    /// <summary>The base a soft prompt records: every projection (it conditions the whole model).</summary>
    static BaseFingerprint FingerprintOf(CausalLM model) => BaseFingerprint.Compute(model, model.Linears().Select(l => l.ModulePath));

    /// <summary>Loads a soft prompt (not yet attached); a recorded base fingerprint must match unless <paramref name="allowMismatch"/>.</summary>
    public static PromptEmbeddings Load(CausalLM model, string dir, bool allowMismatch = false)
    {
        string configPath = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        var json = JsonFile.ReadObject(configPath);
        if (json["peft_type"]?.GetValue<string>() != PromptTuningConfig.PeftType)
            throw new InvalidDataException($"{dir}: not a prompt-tuning adapter (peft_type {json["peft_type"]})");
        var cfg = PromptTuningConfig.FromJson(json, configPath);
        if (AdapterFolderFiles.RecordedBase(dir, json) is { } recorded)
            AdapterFolderFiles.CheckBase(model, recorded, null, dir, allowMismatch);
        string file = Path.Combine(dir, AdapterFolderFiles.WeightsFile);
        using var f = new SafeTensorsFile(file);
        if (!f.Contains("prompt_embeddings")) throw new InvalidDataException($"{file}: missing tensor 'prompt_embeddings'");
        var info = f.Info("prompt_embeddings");
        long hidden = model.Config.HiddenSize;
        if (info.Shape.Length != 2 || info.Shape[0] != cfg.NumVirtualTokens || info.Shape[1] != hidden)
            throw new InvalidDataException($"{file}: tensor 'prompt_embeddings' has shape [{string.Join(", ", info.Shape)}], expected [{cfg.NumVirtualTokens}, {hidden}]");
        var t = f.Load("prompt_embeddings", model.Dtype, model.Device);
        if (!FiniteValues.All(t)) { t.Dispose(); FiniteValues.Require(t, file, "prompt_embeddings"); }
        return new PromptEmbeddings(new Parameter(t, requires_grad: false), cfg);
    }

    public void Dispose()
    {
        if (_model?.InputEmbeddingsHook == this) _model.InputEmbeddingsHook = null;
        Embeddings.Dispose();
    }
}
