using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.IO;

/// <summary>
/// The one writer of adapter folders, for every tuning method: adapter_config.json (with the base fingerprint under
/// <see cref="BaseFingerprint.ConfigKey"/>) and adapter_model.safetensors, swapped in together (<see cref="AtomicFile"/>),
/// so a folder is either the old one or the whole new one.
/// </summary>
internal static class AdapterFolderWriter
{
    public static void Write(string dir, JsonObject config, BaseFingerprint fingerprint, IEnumerable<SafeTensorEntry> entries)
    {
        config[BaseFingerprint.ConfigKey] = fingerprint.ToJson();
        var list = entries.ToList();
        AtomicFile.WriteFolder(dir, tmp =>
        {
            SafeTensorsWriter.Write(Path.Combine(tmp, AdapterFolderFiles.WeightsFile), list, new Dictionary<string, string> { ["format"] = "pt" });
            File.WriteAllText(Path.Combine(tmp, AdapterFolderFiles.ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
    }
}
