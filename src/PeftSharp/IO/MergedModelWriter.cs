using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// Writes a model (adapters already merged into its weights) as a complete Hugging Face folder next to its base:
/// every non-weight file is copied (<see cref="ModelFolderFiles"/>), and each safetensors file of the base is rewritten with the same tensors, order,
/// dtypes and metadata, so the merged folder loads wherever the base does and has the same size.
/// </summary>
internal static class MergedModelWriter
{
    /// <param name="model">The model with its adapters merged (dense weights only).</param>
    /// <param name="baseFolder">The folder the base was loaded from: its other files are copied, its safetensors layout kept.</param>
    /// <param name="outDir">The merged model folder to write (swapped in atomically).</param>
    /// <param name="finish">Last changes to the folder's other files before it appears (the chat template merge carries).</param>
    public static void Write(CausalLM model, string baseFolder, string outDir, Action<string>? finish = null)
    {
        if (model.Linears().Any(l => l.Quantized is not null))
            throw new InvalidOperationException("cannot write a merged model with a quantised base; load the base dense");
        if (Gguf.GgufModelSource.FileOf(baseFolder) is not null) { Gguf.GgufModelSource.WriteMerged(model, baseFolder, outDir, finish); return; }
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var reader = new CheckpointReader(baseFolder);
        AtomicFile.WriteFolder(outDir, tmp =>
        {
            // No weight file of the base is copied (a stale pytorch_model.bin, tf_model.h5, ... would hold the
            // unmerged weights); its safetensors files are rewritten under the same names, so its index still fits.
            ModelFolderFiles.CopyNonWeightFiles(baseFolder, tmp);
            foreach (var st in reader.Names.Select(reader.FileOf).Distinct())
            {
                var entries = st.Tensors.OrderBy(t => t.Begin).Select(info => Entry(info, st, parameters)).ToList();
                SafeTensorsWriter.Write(Path.Combine(tmp, Path.GetFileName(st.Path)), entries, st.Metadata);
            }
            string index = Path.Combine(baseFolder, "model.safetensors.index.json");
            if (File.Exists(index)) File.Copy(index, Path.Combine(tmp, Path.GetFileName(index)));
            finish?.Invoke(tmp);
        });
    }

    /// <summary>The model's (merged) tensor in the base file's dtype, or the base bytes for tensors the model does not hold.</summary>
    static SafeTensorEntry Entry(SafeTensorInfo info, SafeTensorsFile st, Dictionary<string, TorchSharp.Modules.Parameter> parameters)
    {
        if (!parameters.TryGetValue(info.Name, out var p))
            return new SafeTensorEntry(info.Name, info.Dtype, info.Shape, info.ByteLength, s => s.Write(st.RawBytes(info.Name)));
        var dtype = SafeTensorDtype.ToScalarType(info.Dtype);
        return new SafeTensorEntry(info.Name, info.Dtype, info.Shape, info.ByteLength, s =>
        {
            using var t = p.detach().to(dtype, CPU, disposeAfter: true);   // the detached wrapper disposed, not left to the finalizer
            SafeTensorEntry.FromTensor(info.Name, t).WriteData(s);
        });
    }
}
