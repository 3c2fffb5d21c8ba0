using System.Text.RegularExpressions;

namespace PeftSharp.IO;

/// <summary>
/// The non-weight files of a Hugging Face model folder (config, tokenizer, generation config, README, ...), which a
/// tool that writes new weights for the model copies next to them. Every weight file is left behind, whatever its
/// format: next to new weights, a stale copy (pytorch_model.bin, tf_model.h5, flax_model.msgpack, ...) would hold
/// the old ones.
/// </summary>
internal static class ModelFolderFiles
{
    /// <summary>
    /// Weight files and their indexes (safetensors, PyTorch, TensorFlow, Flax, GGUF, checkpoint shards), adapter
    /// files and hidden files.
    /// </summary>
    static readonly Regex Skip = new(
        @"^adapter_|^\.|^model-|^model\.safetensors|\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack)$|\.(safetensors|bin|h5|msgpack)\.index\.json$",
        RegexOptions.Compiled);

    /// <summary>
    /// Copies the non-weight files of <paramref name="modelDir"/> (top level only) into <paramref name="outDir"/>,
    /// except the names in <paramref name="except"/> (files the caller writes itself).
    /// </summary>
    public static void CopyNonWeightFiles(string modelDir, string outDir, params string[] except)
    {
        foreach (var f in Directory.EnumerateFiles(modelDir))
        {
            string fn = Path.GetFileName(f);
            if (Skip.IsMatch(fn) || except.Contains(fn)) continue;
            File.Copy(f, Path.Combine(outDir, fn));
        }
    }
}
