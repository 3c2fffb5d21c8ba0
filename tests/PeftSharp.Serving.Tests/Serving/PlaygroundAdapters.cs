using System.Text.Json.Nodes;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// An adapter root for the playground tests: "a", a random LoRA saved with its base fingerprint, and "run-b", a real
/// `peft train` run on the tiny-llama fixture (its final/ adapter beside train-options.json and summary.json, which
/// the adapter card reads). Running the CLI writes to the console: callers are in the "console" collection.
/// </summary>
public static class PlaygroundAdapters
{
    public static (string Root, string A, string B) Make(Xunit.Abstractions.ITestOutputHelper output)
    {
        string root = TestPaths.TempDir();
        string a = ServingHarness.SavedAdapter(Path.Combine(root, "a"), seed: 11);
        string data = ReversalTask.Write(root, 8);
        string run = Path.Combine(root, "run-b");
        var (code, stdout, err) = CliCapture.Run("train", "--model", TestPaths.TinyLlama, "--data", data, "--eval-file", data, "--method", "lora",
            "--rank", "2", "--steps", "3", "--batch", "2", "--lr", "0.01", "--seed", "5", "--out", run);
        output.WriteLine(stdout + err);
        Assert.True(code == 0, err);
        return (root, a, Path.Combine(run, "final"));
    }

    public static JsonObject Summary(string adapter) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(Path.GetDirectoryName(adapter)!, "summary.json")))!.AsObject();
}
