using System.Diagnostics;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// lora-overhead: forward latency of the bare base, the base with an unmerged LoRA adapter, and with the same
/// adapter merged, on one random ~34M-parameter Llama-shaped model and batch. Conditions are interleaved per round
/// (in rotating order) so drift on a shared machine hits all three alike; the median and the minimum (the least disturbed run, the better
/// estimate on a busy machine) per condition are reported.
/// Options: --rank 16 --batch 4 --seq 128 --rounds 15
/// </summary>
public sealed class LoraOverheadBench : IBench
{
    public string Name => "lora-overhead";
    public string Description => "forward latency: bare base vs unmerged LoRA vs merged LoRA (~34M Llama shape)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int rank = a.Int("rank", 16), rounds = a.Int("rounds", 15);
        long batch = a.Int("batch", 4), seq = a.Int("seq", 128);
        // ~34M parameters: vocab 8000, hidden 512, 8 layers, MLP 1408.
        using var model = BenchModels.Random(BenchModels.Config(8000, 512, 8, 8, 8, 1408));
        long baseParams = model.ParameterCount();
        using var g = new Generator(1);
        using var ids = randint(0, model.Config.VocabSize, new[] { batch, seq }, generator: g);
        var lora = LoraModel.Of(model);
        var adapter = LoraInjector.Inject(model, new LoraConfig { R = rank, LoraAlpha = 2 * rank, TargetModulesRegex = "all-linear", InitLoraWeights = LoraInit.False }, "bench", 1);

        var conditions = new (string Name, Action Setup)[]
        {
            ("base", () => { if (lora.Merged.Count > 0) lora.Unmerge("bench"); lora.DisableAll(); }),
            ("lora-unmerged", () => { if (lora.Merged.Count > 0) lora.Unmerge("bench"); lora.EnableAll(); }),
            ("lora-merged", () => { lora.EnableAll(); if (lora.Merged.Count == 0) lora.Merge("bench"); }),
        };
        var times = conditions.ToDictionary(c => c.Name, _ => new List<double>());
        using var _ = no_grad();
        foreach (var (_, setup) in conditions) { setup(); Forward(model, ids); }   // warm-up
        for (int r = 0; r < rounds; r++)
            // The starting condition rotates per round, so no condition always follows the same one.
            foreach (var (name, setup) in conditions.Skip(r % conditions.Length).Concat(conditions.Take(r % conditions.Length)))
            {
                setup();
                var sw = Stopwatch.StartNew();
                Forward(model, ids);
                times[name].Add(sw.Elapsed.TotalMilliseconds);
            }

        double baseMs = BenchStats.Median(times["base"]), baseMin = times["base"].Min();
        Console.WriteLine($"model {baseParams / 1e6:F1}M params, batch {batch}x{seq}, LoRA r={rank} all-linear ({adapter.ParameterCount / 1e6:F2}M adapter params), {rounds} rounds, torch threads {get_num_threads()}");
        foreach (var (name, _) in conditions)
        {
            double m = BenchStats.Median(times[name]), min = times[name].Min();
            Console.WriteLine($"{name,-14} median {m,8:F1} ms (x{m / baseMs:F3})   min {min,8:F1} ms (x{min / baseMin:F3})");
        }
        return 0;
    }

    static void Forward(CausalLM model, Tensor ids)
    {
        using var logits = model.Forward(ids);
    }
}
