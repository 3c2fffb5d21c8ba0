// Will a fine-tune fit, and where does the memory go? PeftSharp.Memory answers from the model's config.json (or a
// built-in preset) in milliseconds, without TorchSharp.
using PeftSharp.Memory;

string model = args.Length > 0 ? args[0] : "llama-3.1-8b";   // a preset name or a path to a Hugging Face config.json
const double GB = 1e9;

foreach (var method in new[] { TuningMethod.Full, TuningMethod.Lora, TuningMethod.Qlora })
{
    var request = new PlanRequest { Method = method, Rank = 16, BatchSize = 2, SequenceLength = 2048, GradientCheckpointing = true };
    MemoryPlan plan = MemoryPlanner.Plan(model, request);
    Console.WriteLine($"{model} {method,-5}: {plan.TrainableParameters:N0} of {plan.TotalParameters:N0} parameters trained, peak {plan.TotalBytes / GB:F1} GB");
    Console.WriteLine($"    weights {plan.WeightsBytes / GB:F1} GB, gradients {plan.GradientsBytes / GB:F2} GB, optimizer {plan.OptimizerBytes / GB:F2} GB, activations {plan.ActivationsBytes / GB:F1} GB");
    var fits = Gpus.Common.Where(g => plan.Fits(g.Bytes)).Select(g => g.Name).ToList();
    Console.WriteLine($"    fits on: {(fits.Count > 0 ? string.Join(", ", fits) : "none of the common GPUs")}");
}
