using PeftSharp.IO.Gguf;
using PeftSharp.Models;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// A loaded LoRA adapter as a llama.cpp adapter GGUF: the LoRA-aware part (what has no llama.cpp form, each layer's
/// A, B and scale) in front of the format writer <see cref="GgufAdapterExport"/>, which knows no tuner.
/// </summary>
internal static class LoraGgufExport
{
    /// <summary>Writes <paramref name="adapter"/> (loaded on <paramref name="model"/> from <paramref name="adapterDir"/>) to <paramref name="outPath"/>.</summary>
    public static void Write(CausalLM model, LoraAdapter adapter, string modelDir, string adapterDir, string outPath, string? baseFingerprintJson = null)
    {
        string cfgPath = Path.Combine(adapterDir, IO.AdapterFolderFiles.ConfigFile);
        if (adapter.Config.UseDora)
            throw new InvalidDataException($"{cfgPath}: a DoRA adapter has no llama.cpp adapter form; use `peft export gguf --adapter {adapterDir}` to export it merged");
        var layers = adapter.Layers.Select(kv => new GgufLoraLayer(kv.Key, kv.Value.A, kv.Value.B, kv.Value.Scaling));
        GgufAdapterExport.Write(model.Config, layers, modelDir, adapterDir, outPath, baseFingerprintJson);
    }
}
