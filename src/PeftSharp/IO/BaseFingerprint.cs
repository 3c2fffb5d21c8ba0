using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// A content fingerprint of the base weights an adapter touches, recorded in the adapter folder's
/// <see cref="AdapterFolderFiles.SidecarFile"/> (folders saved before it have it in adapter_config.json under
/// <see cref="LegacyConfigKey"/>). Each tensor is hashed over its name, shape, storage kind and
/// the fp32 bytes of the dense weight as the layer sees it (dequantised for a quantised base), so a different
/// checkpoint, a different quantisation or a different architecture is detected and the differing tensors named.
/// </summary>
internal sealed record BaseFingerprint(string Scheme, string Architecture, string ModelType, int HiddenSize, int NumLayers,
    string Digest, IReadOnlyDictionary<string, string> Tensors)
{
    /// <summary>
    /// Where folders saved before <see cref="AdapterFolderFiles.SidecarFile"/> recorded the fingerprint: a key of
    /// adapter_config.json. Read (<see cref="AdapterFolderFiles.RecordedBase"/>), never written.
    /// </summary>
    public const string LegacyConfigKey = "peftsharp_base_fingerprint";

    /// <summary>
    /// For a GGUF base: "FILE.gguf sha256:HASH" (the file's name and a hash of its tensor data). Not part of
    /// <see cref="Digest"/>; when both fingerprints have one, a different tensor-data hash is a difference.
    /// </summary>
    public string? Source { get; init; }

    /// <summary>
    /// Fingerprint of the given modules; paths the model lacks are simply absent (Differences reports them).
    /// With <paramref name="quantizedAs"/>, a dense base is fingerprinted as that quantiser would store it, so a QLoRA
    /// adapter's recorded fingerprint can be checked against the dense weights it was quantised from.
    /// </summary>
    public static BaseFingerprint Compute(CausalLM model, IEnumerable<string> modulePaths, IWeightQuantizer? quantizedAs = null)
    {
        var wanted = modulePaths.ToHashSet(StringComparer.Ordinal);
        var tensors = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var lin in model.Linears().Where(l => wanted.Contains(l.ModulePath)))
        {
            using var requantized = lin.Quantized is null && quantizedAs is not null && quantizedAs.ShouldQuantize(lin.ModulePath) ? QuantizeDetached(quantizedAs, lin.weight!) : null;
            var quantized = lin.Quantized ?? requantized;
            string kind = quantized?.Scheme ?? model.Dtype.ToString().ToLowerInvariant();
            using (var w = quantized is { } q ? q.Dequantize(ScalarType.Float32, CPU) : lin.weight!.detach().to(ScalarType.Float32, CPU, disposeAfter: true))
                tensors[lin.ModulePath + ".weight"] = HashTensor(lin.ModulePath + ".weight", kind, w);
            if (lin.bias is not null)
                using (var b = lin.bias.detach().to(ScalarType.Float32, CPU, disposeAfter: true))
                    tensors[lin.ModulePath + ".bias"] = HashTensor(lin.ModulePath + ".bias", kind, b);
        }
        var c = model.Config;
        string arch = c.Raw["architectures"] is JsonArray { Count: > 0 } a ? a[0]!.GetValue<string>() : c.ModelType;
        string scheme = model.QuantizationScheme == "none" && quantizedAs is not null ? quantizedAs.Scheme : model.QuantizationScheme;
        return Of(scheme, arch, c.ModelType, c.HiddenSize, c.NumLayers, tensors) with { Source = GgufSource(c) };
    }

    static string? GgufSource(ModelConfig c) =>
        c.Raw[IO.Gguf.GgufModelSource.ConfigKey] is JsonObject g && g["file"] is JsonValue f && g["tensor_data_sha256"] is JsonValue h
            ? $"{f.GetValue<string>()} sha256:{h.GetValue<string>()}" : null;

    static string? HashOf(string? source) => source is null ? null : source[(source.LastIndexOf(" sha256:", StringComparison.Ordinal) + 1)..];

    /// <summary>
    /// The fingerprint <see cref="Compute"/> gives for <paramref name="model"/>'s checkpoint loaded in fp32 (the default
    /// load of generate, eval and merge), read from <paramref name="folder"/> one tensor at a time. A model trained with a
    /// 16-bit compute dtype (`train --compute-dtype bf16`) records this one, so its fp32 adapter loads on the checkpoint
    /// it was trained from, not only on a 16-bit load of it. Dense modules only (a quantised model's fingerprint does not
    /// depend on the compute dtype).
    /// </summary>
    public static BaseFingerprint OfCheckpointInFp32(string folder, CausalLM model, IEnumerable<string> modulePaths)
    {
        var wanted = modulePaths.ToHashSet(StringComparer.Ordinal);
        var tensors = new SortedDictionary<string, string>(StringComparer.Ordinal);
        using var reader = new CheckpointReader(folder);
        string kind = ScalarType.Float32.ToString().ToLowerInvariant();
        foreach (var lin in model.Linears().Where(l => wanted.Contains(l.ModulePath)))
            foreach (var part in lin.bias is null ? new[] { ".weight" } : new[] { ".weight", ".bias" })
                using (var t = reader.Load(lin.ModulePath + part, ScalarType.Float32, CPU))
                    tensors[lin.ModulePath + part] = HashTensor(lin.ModulePath + part, kind, t);
        var c = model.Config;
        string arch = c.Raw["architectures"] is JsonArray { Count: > 0 } a ? a[0]!.GetValue<string>() : c.ModelType;
        return Of(model.QuantizationScheme, arch, c.ModelType, c.HiddenSize, c.NumLayers, tensors);
    }

    /// <summary>
    /// This fingerprint narrowed to the given modules, exactly as <see cref="Compute"/> over those paths would give it
    /// (digest included), without reading a weight again.
    /// </summary>
    public BaseFingerprint Restrict(IEnumerable<string> modulePaths)
    {
        var wanted = modulePaths.ToHashSet(StringComparer.Ordinal);
        var tensors = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, hash) in Tensors)
            if (wanted.Contains(ModulePathOf(name))) tensors[name] = hash;
        return Of(Scheme, Architecture, ModelType, HiddenSize, NumLayers, tensors) with { Source = Source };
    }

    static BaseFingerprint Of(string scheme, string arch, string modelType, int hiddenSize, int numLayers, SortedDictionary<string, string> tensors)
    {
        var sb = new StringBuilder($"{scheme}|{arch}|{modelType}|{hiddenSize}|{numLayers}\n");
        foreach (var (k, v) in tensors) sb.Append(k).Append('=').Append(v).Append('\n');
        string digest = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
        return new BaseFingerprint(scheme, arch, modelType, hiddenSize, numLayers, digest, tensors);
    }

    /// <summary>X for the tensor X.weight or X.bias.</summary>
    static string ModulePathOf(string tensor) =>
        tensor.EndsWith(".weight", StringComparison.Ordinal) ? tensor[..^".weight".Length]
        : tensor.EndsWith(".bias", StringComparison.Ordinal) ? tensor[..^".bias".Length] : tensor;

    /// <summary>Module paths (X for X.weight) this fingerprint covers.</summary>
    public IEnumerable<string> ModulePaths => Tensors.Keys.Where(k => k.EndsWith(".weight", StringComparison.Ordinal)).Select(k => k[..^".weight".Length]);

    /// <summary>Human-readable differences of <paramref name="actual"/> against this (recorded) fingerprint; empty = same base.</summary>
    public IReadOnlyList<string> Differences(BaseFingerprint actual)
    {
        var d = new List<string>();
        void Field<T>(string name, T want, T got) { if (!EqualityComparer<T>.Default.Equals(want, got)) d.Add($"{name} {want} != {got}"); }
        Field("quantisation", Scheme, actual.Scheme);
        Field("architecture", Architecture, actual.Architecture);
        Field("model_type", ModelType, actual.ModelType);
        Field("hidden_size", HiddenSize, actual.HiddenSize);
        Field("num_layers", NumLayers, actual.NumLayers);
        if (Source is not null && actual.Source is not null && HashOf(Source) != HashOf(actual.Source)) d.Add($"GGUF base {Source} != {actual.Source}");
        foreach (var (name, hash) in Tensors)
        {
            if (!actual.Tensors.TryGetValue(name, out var other)) d.Add($"{name} missing");
            else if (other != hash) d.Add($"{name} differs");
        }
        foreach (var name in actual.Tensors.Keys.Where(k => !Tensors.ContainsKey(k))) d.Add($"{name} not in the recorded base");
        return d;
    }

    public JsonObject ToJson() => new JsonObject
    {
        ["scheme"] = Scheme,
        ["architecture"] = Architecture,
        ["model_type"] = ModelType,
        ["hidden_size"] = HiddenSize,
        ["num_layers"] = NumLayers,
        ["digest"] = Digest,
        ["tensors"] = new JsonObject(Tensors.Select(t => KeyValuePair.Create(t.Key, (JsonNode?)t.Value))),
    }.WithSource(Source);

    /// <summary>A fingerprint as <see cref="ToJson"/> wrote it; malformed: an error naming <paramref name="source"/> (the file) and <paramref name="key"/>.</summary>
    public static BaseFingerprint FromJson(JsonObject o, string source, string key)
    {
        try
        {
            return new BaseFingerprint(o["scheme"]!.GetValue<string>(), o["architecture"]!.GetValue<string>(), o["model_type"]!.GetValue<string>(),
                o["hidden_size"]!.GetValue<int>(), o["num_layers"]!.GetValue<int>(), o["digest"]!.GetValue<string>(),
                ((JsonObject)o["tensors"]!).ToDictionary(p => p.Key, p => p.Value!.GetValue<string>()))
            { Source = o["source"]?.GetValue<string>() };
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or InvalidCastException or FormatException)
        {
            throw new InvalidDataException($"{source}: malformed '{key}' ({e.Message})");
        }
    }

    /// <summary>16 hex digits of SHA-256 over name, shape, storage kind and the fp32 bytes.</summary>
    static IQuantizedWeight QuantizeDetached(IWeightQuantizer quantizer, Tensor weight)
    {
        using var detached = weight.detach();   // disposed here, not left to the finalizer
        return quantizer.Quantize(detached, CPU);
    }

    static string HashTensor(string name, string kind, Tensor fp32)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(Encoding.UTF8.GetBytes($"{name}|{string.Join("x", fp32.shape)}|{kind}|"));
        using var c = fp32.contiguous();
        foreach (var view in TensorChunks.Rows(c))
            using (view) h.AppendData(view.bytes);
        return Convert.ToHexStringLower(h.GetHashAndReset())[..16];
    }
}

static class FingerprintJson
{
    /// <summary>Adds "source" only when there is one, so fingerprints of HF bases keep their JSON unchanged.</summary>
    public static JsonObject WithSource(this JsonObject o, string? source)
    {
        if (source is not null) o["source"] = source;
        return o;
    }
}
