using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PromptTuning;

/// <summary>
/// Soft prompt: a [N, hidden] parameter prepended to the token embeddings, saved as PEFT's
/// "prompt_embeddings". The base model is untouched; the caller passes <see cref="Prepend"/>'s result to
/// CausalLM.Forward as inputsEmbeds (and left-extends labels/masks by N).
/// </summary>
public sealed class PromptEmbeddings : IDisposable
{
    public Parameter Embeddings { get; }
    public PromptTuningConfig Config { get; }
    public int Count => Config.NumVirtualTokens;

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
                    init = randn([n, emb.shape[1]], emb.dtype, emb.device, generator: g) * emb.std().item<float>();
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

    /// <summary>[B, N + T, H]: the soft prompt followed by the embeddings of <paramref name="ids"/>.</summary>
    public Tensor Prepend(CausalLM model, Tensor ids)
    {
        using var scope = NewDisposeScope();
        var tok = model.model.embed_tokens.forward(ids);
        var prefix = Embeddings.unsqueeze(0).expand(ids.shape[0], -1, -1);
        return cat([prefix.to_type(tok.dtype), tok], 1).MoveToOuterDisposeScope();
    }

    public void Save(CausalLM model, string dir, string baseModel = "")
    {
        AtomicFile.WriteFolder(dir, tmp =>
        {
            var c = model.Config;
            File.WriteAllText(Path.Combine(tmp, "adapter_config.json"),
                Config.ToJson(c.HiddenSize, c.NumLayers, c.NumHeads, baseModel).ToJsonString(new() { WriteIndented = true }));
            using var cpu = Embeddings.detach().cpu();
            SafeTensorsWriter.Write(Path.Combine(tmp, "adapter_model.safetensors"), [("prompt_embeddings", cpu)],
                new Dictionary<string, string> { ["format"] = "pt" });
        });
    }

    public static PromptEmbeddings Load(CausalLM model, string dir)
    {
        var json = JsonFile.ReadObject(Path.Combine(dir, PeftAdapterIO.ConfigFile));
        if (json["peft_type"]?.GetValue<string>() != "PROMPT_TUNING")
            throw new InvalidDataException($"{dir}: not a prompt-tuning adapter (peft_type {json["peft_type"]})");
        var cfg = PromptTuningConfig.FromJson(json);
        string file = Path.Combine(dir, "adapter_model.safetensors");
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

    public void Dispose() => Embeddings.Dispose();
}
