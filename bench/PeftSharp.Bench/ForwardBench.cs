using System.Diagnostics;
using System.Text.Json;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>Inference forward tokens/s (plus the loss, as the peer computes it) of a Llama-shaped model.</summary>
public sealed class ForwardBench : IBench
{
    public string Name => "forward";
    public string Description => "inference forward tokens/s; same flags as peer_lora_step.py --mode forward";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int vocab = a.Int("vocab", 4096), hidden = a.Int("hidden", 512), layers = a.Int("layers", 4), heads = a.Int("heads", 8);
        int kv = a.Int("kv-heads", 8), seq = a.Int("seq", 256), batch = a.Int("batch", 4), steps = a.Int("steps", 10), warmup = a.Int("warmup", 2);
        int threads = a.Int("threads", 0);
        if (threads > 0) set_num_threads(threads);
        var cfg = BenchModels.Config(vocab, hidden, layers, heads, kv, a.Int("intermediate", 0));
        using var model = BenchModels.Random(cfg);
        using var ids = randint(0, vocab, [batch, seq + 1]);
        using var input = ids.narrow(1, 0, seq);
        using var target = ids.narrow(1, 1, seq);
        var times = new List<double>();
        double loss = 0;
        for (int s = 0; s < warmup + steps; s++)
        {
            var sw = Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var logits = model.Forward(input);
                loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1)).item<float>();
            }
            if (s >= warmup) times.Add(sw.Elapsed.TotalSeconds);
        }
        double med = BenchStats.Median(times);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            impl = "peftsharp", mode = "forward", threads = get_num_threads(), median_step_s = Math.Round(med, 4),
            tokens_per_s = Math.Round(batch * seq / med, 1), total_params = model.ParameterCount(), loss = Math.Round(loss, 4),
        }));
        return 0;
    }
}
