using System.Text.Json;

namespace PeftSharp.Tests;

/// <summary>An adapter folder holding adapter_config.json alone (no weights, no config.json), as `peft plan` reads one.</summary>
public static class AdapterConfigFolder
{
    /// <param name="baseModel">Its base_model_name_or_path.</param>
    /// <param name="peftFields">The rest of the JSON object's fields, e.g. "peft_type": "LORA", "r": 4.</param>
    public static string Write(string baseModel, string peftFields)
    {
        string dir = Path.Combine(TestPaths.TempDir(), "adapter");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"),
            $"{{\"base_model_name_or_path\": {JsonSerializer.Serialize(baseModel)}, \"task_type\": \"CAUSAL_LM\", {peftFields}}}");
        return dir;
    }
}
