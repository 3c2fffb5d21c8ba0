using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Compare;

/// <summary>
/// Forward latency of a trained result relative to the base: LoRA-family adapters merged into the dense base (what a
/// deployment serves), Houlsby adapters and soft prompts as they run (they cannot merge), full fine-tuning as its new
/// weights. Fastest of repeated forwards of one fixed batch, base and variant alternating: on a shared machine the
/// minimum is the stable estimate of the compute, a median still moves with other processes' load.
/// </summary>
public static class InferenceOverhead
{
    public static double Measure(string baseDir, CompareRun run, string finalDir, int reps = 30, int batch = 8, int seqLen = 64)
    {
        using var baseModel = ModelLoader.Load(baseDir);
        using var variant = run.Method == "full" ? ModelLoader.Load(finalDir) : ModelLoader.Load(baseDir);
        using (PeftLogging.Redirect(NullLogger.Instance)) // a QLoRA adapter on the dense base warns; expected here
        {
            if (run.Method != "full") AdapterCli.Apply(variant, [finalDir], allowBaseMismatch: false);
        }
        if (run.IsLora) LoraModel.Of(variant).MergeAndUnload("default");

        using var ids = randint(0, baseModel.Config.VocabSize, [batch, seqLen], ScalarType.Int64, generator: new Generator(7));
        using var _ = no_grad();
        double Time(Func<Tensor> forward)
        {
            var sw = Stopwatch.StartNew();
            using (forward()) { }
            return sw.Elapsed.TotalSeconds;
        }
        Func<Tensor> b = () => baseModel.Forward(ids);
        Func<Tensor> v = () => variant.Forward(ids); // a Houlsby adapter or soft prompt runs inside the forward
        Time(b); Time(v); // warm-up
        var tb = new List<double>();
        var tv = new List<double>();
        for (int i = 0; i < reps; i++) { tb.Add(Time(b)); tv.Add(Time(v)); }
        return tv.Min() / tb.Min() - 1;
    }
}
