using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Houlsby;

/// <summary>Attaches, saves and loads Houlsby adapters on every decoder layer of a model.</summary>
internal static class HoulsbyAdapters
{
    /// <summary>
    /// Adds fresh adapters (identity at step 0) to every layer and returns their parameters. They run while
    /// <paramref name="runs"/> says so (default: while the model's adapters are not disabled).
    /// </summary>
    public static List<(string Name, Parameter P)> Attach(CausalLM model, HoulsbyConfig cfg, int seed = 0, Func<bool>? runs = null)
    {
        runs ??= () => !model.State.Disabled;
        var g = new TorchSharp.torch.Generator((ulong)seed);
        int hidden = model.Config.HiddenSize, b = cfg.Bottleneck(hidden);
        var device = model.Device;
        foreach (var layer in model.Layers)
        {
            if (layer.AfterAttention is not null || layer.AfterMlp is not null)
                throw new InvalidOperationException($"layer {layer.Index} already has Houlsby adapters");
            if (cfg.AfterAttention) layer.AfterAttention = new BottleneckAdapter(hidden, b, cfg.NonLinearity, model.Dtype, device, g, runs);
            if (cfg.AfterMlp) layer.AfterMlp = new BottleneckAdapter(hidden, b, cfg.NonLinearity, model.Dtype, device, g, runs);
        }
        return Parameters(model);
    }

    /// <summary>Every adapter parameter with its saved key, e.g. model.layers.0.attn_adapter.down.weight.</summary>
    public static List<(string Name, Parameter P)> Parameters(CausalLM model)
    {
        var list = new List<(string, Parameter)>();
        foreach (var layer in model.Layers)
        {
            if (layer.AfterAttention is BottleneckAdapter a)
                list.AddRange(a.NamedParameters().Select(p => ($"model.layers.{layer.Index}.attn_adapter.{p.Key}", p.P)));
            if (layer.AfterMlp is BottleneckAdapter m)
                list.AddRange(m.NamedParameters().Select(p => ($"model.layers.{layer.Index}.mlp_adapter.{p.Key}", p.P)));
        }
        return list;
    }

    public static void Detach(CausalLM model) => model.DisposeLayerHooks();

    public static void Save(CausalLM model, HoulsbyConfig cfg, string dir, string baseModel = "")
    {
        var ps = Parameters(model);
        if (ps.Count == 0) throw new InvalidOperationException("the model has no Houlsby adapters to save");
        AdapterFolderWriter.Write(dir, cfg.ToJson(model.Config.HiddenSize, baseModel), FingerprintOf(model),
            ps.Select(p => SafeTensorEntry.FromTensor(p.Name, p.P)));
    }

    /// <summary>The base a Houlsby adapter records: every projection (the adapters sit on every layer's output).</summary>
    internal static BaseFingerprint FingerprintOf(CausalLM model) => BaseFingerprint.Compute(model, model.Linears().Select(l => l.ModulePath));

    /// <summary>Loads a Houlsby adapter folder; a recorded base fingerprint must match (or, with <paramref name="allowMismatch"/>, warns).</summary>
    public static HoulsbyConfig Load(CausalLM model, string dir, Func<bool>? runs = null, bool allowMismatch = false)
    {
        string configPath = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        var json = JsonFile.ReadObject(configPath);
        if (json["peft_type"]?.GetValue<string>() != HoulsbyConfig.PeftType)
            throw new InvalidDataException($"{dir}: not a Houlsby adapter (peft_type {json["peft_type"]})");
        var cfg = HoulsbyConfig.FromJson(json);
        if (AdapterFolderFiles.RecordedBase(dir, json) is { } recorded)
            AdapterFolderFiles.CheckBase(model, recorded, null, dir, allowMismatch);
        var ps = Attach(model, cfg, runs: runs);
        string file = Path.Combine(dir, AdapterFolderFiles.WeightsFile);
        using var f = new SafeTensorsFile(file);
        using var _ = no_grad();
        foreach (var (name, p) in ps)
        {
            if (!f.Contains(name)) { Detach(model); throw new InvalidDataException($"{file}: missing tensor '{name}'"); }
            var info = f.Info(name);
            if (!info.Shape.SequenceEqual(p.shape))
            {
                Detach(model);
                throw new InvalidDataException($"{file}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], the model needs [{string.Join(", ", p.shape)}]");
            }
            using var t = f.Load(name, p.dtype, p.device);
            if (!FiniteValues.All(t)) { Detach(model); FiniteValues.Require(t, file, name); }
            p.copy_(t);
        }
        return cfg;
    }
}
