// Times a full fine-tuning run of the bundled demo base on the demo task and prints loss and exact-match accuracy.
// Usage: dotnet run -c Release --project bench/DemoTiming -- [demoDir=assets/demo] [steps=200] [full|lora] [threads]
using System.Diagnostics;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

string demo = args.Length > 0 ? args[0] : "assets/demo";
int steps = args.Length > 1 ? int.Parse(args[1]) : 200;
bool lora = args.Length > 2 && args[2] == "lora";
if (args.Length > 3) set_num_threads(int.Parse(args[3]));
string baseDir = Path.Combine(demo, "base");
var tok = TextTokenizer.Load(baseDir);
using var model = ModelLoader.Load(baseDir);
var o = new TrainerOptions
{
    OutDir = Path.Combine(Path.GetTempPath(), $"demo-ft-{Guid.NewGuid():N}"), LearningRate = lora ? 3e-3 : 3e-4, WarmupSteps = 10,
    MaxSteps = steps, BatchSize = 16, MaxSeqLength = 64, EvalFile = Path.Combine(demo, "eval.jsonl"), EvalInterval = Math.Max(1, steps / 4),
};
var data = TrainingData.Load(Path.Combine(demo, "train.jsonl"), tok, o);
var cpu = Process.GetCurrentProcess().TotalProcessorTime;
ITrainingMethod method = lora ? new BenchLora(model, rank: 8, alpha: 16) : new FullFineTuning(model);
var r = new Trainer(model, method, o, tok.EosId) { Log = Console.WriteLine }.Train(data);
double cpuS = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
Console.WriteLine($"{(lora ? "LoRA" : "full FT")} {r.Steps} steps: wall {r.Elapsed.TotalSeconds:F1}s, cpu {cpuS:F1}s (threads {get_num_threads()}); " +
    $"loss {r.LastLoss:F4}; exact match {r.FirstEval?.ExactMatch:P1} -> {r.LastEval?.ExactMatch:P1}; eval loss {r.FirstEval?.Loss:F3} -> {r.LastEval?.Loss:F3}");
Directory.Delete(o.OutDir, true);
