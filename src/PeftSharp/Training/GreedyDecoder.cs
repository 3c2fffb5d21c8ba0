using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Greedy (argmax) generation for one prompt with a KV cache; used by exact-match evaluation.</summary>
public static class GreedyDecoder
{
    /// <summary>Up to <paramref name="maxNewTokens"/> new ids; stops after emitting <paramref name="eosId"/> (included).</summary>
    public static int[] Generate(CausalLM model, int[] prompt, int maxNewTokens, int? eosId)
    {
        if (prompt.Length == 0) throw new ArgumentException("greedy decoding needs a non-empty prompt");
        using var noGrad = no_grad();
        using var cache = new KvCache(model.Config.NumLayers);
        var result = new List<int>();
        var next = prompt.Select(i => (long)i).ToArray();
        for (int step = 0; step < maxNewTokens; step++)
        {
            using var scope = NewDisposeScope();
            var ids = tensor(next, [1, next.Length]).to(model.Device);
            var logits = model.Forward(ids, cache, lastOnly: true);
            int id = (int)logits[0, -1].argmax().item<long>();
            result.Add(id);
            if (id == eosId) break;
            next = [id];
        }
        return result.ToArray();
    }
}
