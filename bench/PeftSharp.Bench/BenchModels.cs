using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>Random Llama-shaped models built in memory (no files), for timing only.</summary>
public static class BenchModels
{
    /// <summary>~34M parameters: hidden 512, 8 layers, MLP 1408, vocab 8000.</summary>
    public static CausalLM SmallLlama(int seed = 0, int hidden = 512, int layers = 8, int intermediate = 1408, int vocab = 8000)
    {
        var cfg = new ModelConfig
        {
            ModelType = "llama", HiddenSize = hidden, IntermediateSize = intermediate, NumLayers = layers,
            NumHeads = 8, NumKvHeads = 8, HeadDim = hidden / 8, VocabSize = vocab, MaxPositionEmbeddings = 4096,
        };
        var model = new CausalLM(cfg);
        using var g = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith("norm.weight")) p.fill_(1.0);
            else using (var r = randn(p.shape, generator: g)) p.copy_(r.mul_(0.02));
        }
        return model;
    }

    public static long Arg(string[] args, string name, long fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? long.Parse(args[i + 1]) : fallback;
    }
}
