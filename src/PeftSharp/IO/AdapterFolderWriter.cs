using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.IO;

/// <summary>
/// The one writer of adapter folders, for every tuning method: adapter_config.json (PEFT's keys only),
/// adapter_model.safetensors and <see cref="AdapterFolderFiles.SidecarFile"/> (the base fingerprint), swapped in
/// together (<see cref="AtomicFile"/>), so a folder is either the old one or the whole new one. Re-saving an adapter
/// loaded from an older folder writes this layout: no fingerprint key in adapter_config.json. What training learns
/// after the save (the chat record) joins the sidecar through <see cref="AddToSidecar"/>.
/// </summary>
internal static class AdapterFolderWriter
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static void Write(string dir, JsonObject config, BaseFingerprint fingerprint, IEnumerable<SafeTensorEntry> entries)
    {
        config.Remove(BaseFingerprint.LegacyConfigKey);
        var json = Indented;
        var list = entries.ToList();
        AtomicFile.WriteFolder(dir, tmp =>
        {
            SafeTensorsWriter.Write(Path.Combine(tmp, AdapterFolderFiles.WeightsFile), list, new Dictionary<string, string> { ["format"] = "pt" });
            File.WriteAllText(Path.Combine(tmp, AdapterFolderFiles.ConfigFile), config.ToJsonString(json));
            File.WriteAllText(Path.Combine(tmp, AdapterFolderFiles.SidecarFile), AdapterFolderFiles.Sidecar(fingerprint).ToJsonString(json));
        });
    }

    /// <summary>
    /// Sets <paramref name="key"/> of a saved folder's sidecar to <paramref name="value"/> (atomically: temp file,
    /// rename), keeping its other entries; the folder's other files are left as they are.
    /// </summary>
    public static void AddToSidecar(string dir, string key, JsonNode value)
    {
        var sidecar = AdapterFolderFiles.ReadSidecar(dir) ?? new JsonObject();
        sidecar[key] = value;
        AtomicFile.WriteAllText(Path.Combine(dir, AdapterFolderFiles.SidecarFile), sidecar.ToJsonString(Indented));
    }
}
