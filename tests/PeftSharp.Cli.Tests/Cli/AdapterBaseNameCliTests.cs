using System.Text.Json.Nodes;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// base_model_name_or_path of an adapter trained on a local folder is --model as given, as PEFT records
/// model.name_or_path (what was passed to from_pretrained): a relative path stays a relative path. It used to be the
/// folder's bare name ("base"), which `peft plan ADAPTER` could not find again (or found as another folder of that
/// name in the working directory).
/// </summary>
[Collection("console")]
public class AdapterBaseNameCliTests
{
    [Theory]
    [InlineData("lora")]
    [InlineData("adapter")]   // Houlsby and prompt tuning recorded "" before: plan said "names no base model"
    [InlineData("prompt")]
    public void ALocalBaseIsRecordedAsGivenAndFoundAgain(string method)
    {
        string dir = TestPaths.TempDir(), model = Path.Combine(dir, "my-base"), run = Path.Combine(dir, "run");
        Directory.CreateDirectory(model);
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json" }) File.Copy(Path.Combine(TestPaths.TinyLlama, f), Path.Combine(model, f));
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, model);
        Assert.False(Path.IsPathRooted(relative));
        var (code, _, err) = CliCapture.Run("train", "--model", relative, "--data", ReversalTask.Write(dir, 4), "--method", method, "--steps", "1",
            "--batch", "1", "--max-seq", "16", "--out", run);
        Assert.True(code == 0, err);
        string adapter = Path.Combine(run, "final");
        Assert.Equal(relative, JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")))!["base_model_name_or_path"]!.GetValue<string>());

        // plan finds the base again from the same working directory (it said "names base 'my-base' ... not found").
        (code, var stdout, err) = CliCapture.Run("plan", "--model", adapter, "--json");
        Assert.True(code == 0, err);
        var plan = JsonNode.Parse(stdout)!;
        Assert.Equal("my-base", plan["model"]!.GetValue<string>());
        Assert.Equal(method == "prompt" ? "prompt-tuning" : method, plan["method"]!.GetValue<string>());

        // From another working directory the relative path is not there: the error says where it looked.
        // (deep enough that the path's ../ do not climb back to /: then it would name the same folder from anywhere)
        string elsewhere = Directory.CreateDirectory(Path.Combine(TestPaths.TempDir(), "a", "b", "c", "d", "e", "f", "g", "h")).FullName, before = Environment.CurrentDirectory;
        Environment.CurrentDirectory = elsewhere;
        try { (code, _, err) = CliCapture.Run("plan", "--model", adapter, "--json"); }
        finally { Environment.CurrentDirectory = before; }
        Assert.Equal(1, code);
        Assert.Contains($"names base '{relative}' (base_model_name_or_path), which is not found (no such folder under the working directory {elsewhere}", err);

        // Another base is still refused: the recorded fingerprint decides, not the name.
        (code, _, err) = CliCapture.Run("generate", "--model", Path.Combine(TestPaths.RepoRoot, "assets", "demo", "base"), "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.Contains("--allow-base-mismatch", err);
        Assert.Single(err.Trim().Split('\n'));
    }
}
