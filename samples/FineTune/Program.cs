// Fine-tune a LoRA adapter, save it in the Hugging Face PEFT format, and load it back.
// Defaults to the small demo model and task shipped in the repository (assets/demo): a secret code,
// "code red fox cup ->" gives " seven tolsk mira", that the base has never seen.
using PeftSharp;
using PeftSharp.Training;
using PeftSharp.Training.Methods;

string modelDir = args.Length > 0 ? args[0] : "../../assets/demo/base";         // a model folder
string trainFile = args.Length > 1 ? args[1] : "../../assets/demo/train.jsonl"; // {"prompt","completion"} lines
string adapterDir = args.Length > 2 ? args[2] : "out/adapter";
int steps = args.Length > 3 ? int.Parse(args[3]) : 60;
const string Prompt = "code red fox cup ->";

using (var baseModel = PeftModel.FromPretrained(modelDir))
    Console.WriteLine($"base:     {Prompt}{baseModel.Generate(Prompt, maxNewTokens: 3)}");

// The same run `peft train` makes, as a library call: LoRA on the attention projections, progress reported
// through IProgress (no console output from the library), the adapter saved under OutDir/final.
string runDir = Path.Combine(Path.GetTempPath(), $"finetune-sample-{Environment.ProcessId}");
var result = FineTune.Run(new FineTuneOptions
{
    Model = modelDir,
    DataFile = trainFile,
    Method = new MethodOptions { Method = "lora", Rank = 8, Alpha = 16, Targets = "q_proj,k_proj,v_proj,o_proj" },
    Trainer = new TrainerOptions { MaxSteps = steps, BatchSize = 16, LearningRate = 1e-2, WarmupSteps = 5, OutDir = runDir, Overwrite = true },
}, new Progress<TrainingProgress>(p =>
{
    if (p.Loss is double loss && p.Step % 10 == 0) Console.WriteLine($"step {p.Step}/{p.TotalSteps} loss {loss:F3}");
}));
Console.WriteLine($"{result.MethodDescription}; {result.Train.Steps} steps, last loss {result.Train.LastLoss:F3}");

// Load the trained adapter (PEFT format: adapter_config.json + adapter_model.safetensors) onto the base...
string tuned;
using (var model = PeftModel.FromPretrained(modelDir, adapter: result.Train.FinalDir))
{
    tuned = model.Generate(Prompt, maxNewTokens: 3);
    Console.WriteLine($"adapter:  {Prompt}{tuned}");
    model.SaveAdapter(PeftModel.DefaultAdapterName, adapterDir);   // ...save it where the app keeps it...
}
Directory.Delete(runDir, recursive: true);

// ...and load that copy into a fresh model: it must generate the same.
using var reloaded = PeftModel.FromPretrained(modelDir, adapter: adapterDir);
string again = reloaded.Generate(Prompt, maxNewTokens: 3);
Console.WriteLine(again == tuned
    ? $"the reloaded adapter generates the same: {Prompt}{again}"
    : $"MISMATCH: the reloaded adapter generates {Prompt}{again}");
return again == tuned ? 0 : 1;
