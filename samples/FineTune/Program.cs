// Fine-tune a LoRA adapter, save it in the Hugging Face PEFT format, and load it back.
// Defaults to the small demo model and task shipped in the repository (assets/demo): a secret code,
// "code red fox cup ->" gives " seven tolsk mira", that the base has never seen.
using PeftSharp;
using PeftSharp.Data;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Tuners.Lora;

string modelDir = args.Length > 0 ? args[0] : "../../assets/demo/base";         // a model folder or a Hub repo id
string trainFile = args.Length > 1 ? args[1] : "../../assets/demo/train.jsonl"; // {"prompt","completion"} lines
string adapterDir = args.Length > 2 ? args[2] : "out/adapter";
int steps = args.Length > 3 ? int.Parse(args[3]) : 60;
const string Prompt = "code red fox cup ->";

using var model = PeftModel.FromPretrained(modelDir);
Console.WriteLine($"before: {Prompt}{model.Generate(Prompt, maxNewTokens: 3)}");

// A LoRA adapter on the attention projections; only its parameters train, the base stays frozen.
var adapter = model.AddAdapter("demo", new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] });
model.SetAdapter("demo");
var options = new TrainerOptions
{
    MaxSteps = steps, BatchSize = 16, LearningRate = 1e-2, WarmupSteps = 5,
    OutDir = Path.Combine(Path.GetTempPath(), $"finetune-sample-{Environment.ProcessId}"), Overwrite = true,
};
var data = TrainingData.Load(trainFile, model.Tokenizer, options);
var trainer = new Trainer(model.BaseModel, new AdapterTraining(model.BaseModel, adapter, "lora"), options, model.Tokenizer.EosId)
{
    OnRecord = r => { if (r["loss"] is { } loss && (int)r["step"]! % 10 == 0) Console.WriteLine($"step {r["step"]} loss {(double)loss:F3}"); },
};
TrainResult result = trainer.Train(data);
Directory.Delete(options.OutDir, recursive: true);   // the run's metrics and checkpoints; the adapter is saved below
model.Eval();
string tuned = model.Generate(Prompt, maxNewTokens: 3);
Console.WriteLine($"after {result.Steps} steps (loss {result.LastLoss:F3}): {Prompt}{tuned}");

// Save as PEFT does (adapter_config.json + adapter_model.safetensors, loadable by Python's PEFT), then reload.
model.SaveAdapter("demo", adapterDir);
using var reloaded = PeftModel.FromPretrained(modelDir, adapter: adapterDir);
string again = reloaded.Generate(Prompt, maxNewTokens: 3);
Console.WriteLine(again == tuned
    ? $"the reloaded adapter generates the same: {Prompt}{again}"
    : $"MISMATCH: the reloaded adapter generates {Prompt}{again}");
return again == tuned ? 0 : 1;
