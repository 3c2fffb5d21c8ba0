using System.Text.Json;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// The weights of a Hugging Face model folder: a single model.safetensors, or shards listed in
/// model.safetensors.index.json. Shards are opened lazily and memory-mapped; tensors load one at a time.
/// </summary>
internal sealed class CheckpointReader : IDisposable
{
    readonly Dictionary<string, string> _fileOf = new(StringComparer.Ordinal);
    readonly Dictionary<string, SafeTensorsFile> _open = new();

    public string Folder { get; }
    public IReadOnlyCollection<string> Names => _fileOf.Keys;
    public IReadOnlyCollection<string> Files => _fileOf.Values.Distinct().ToList();

    public CheckpointReader(string folder)
    {
        Folder = folder;
        string single = Path.Combine(folder, "model.safetensors");
        string index = Path.Combine(folder, "model.safetensors.index.json");
        if (File.Exists(single))
        {
            var f = Open(single);
            foreach (var t in f.Tensors) _fileOf[t.Name] = single;
        }
        else if (File.Exists(index))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(File.ReadAllText(index)); }
            catch (JsonException e) { throw new InvalidDataException($"{index}: not valid JSON ({e.Message})"); }
            using var _ = doc;
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{index}: missing 'weight_map'");
            foreach (var p in map.EnumerateObject())
            {
                string shard = Path.GetFullPath(Path.Combine(folder, p.Value.GetString() ?? ""));
                if (!shard.StartsWith(Path.GetFullPath(folder), StringComparison.Ordinal))
                    throw new InvalidDataException($"{index}: shard path '{p.Value}' escapes the model folder");
                _fileOf[p.Name] = shard;
            }
            foreach (var shard in _fileOf.Values.Distinct())
            {
                var f = Open(shard);
                foreach (var (name, file) in _fileOf)
                    if (file == shard && !f.Contains(name))
                        throw new InvalidDataException($"{index}: says '{name}' is in {Path.GetFileName(shard)}, which has no such tensor");
            }
        }
        else throw new FileNotFoundException($"{folder}: no model.safetensors or model.safetensors.index.json");
    }

    SafeTensorsFile Open(string path)
    {
        if (!_open.TryGetValue(path, out var f)) _open[path] = f = new SafeTensorsFile(path);
        return f;
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);

    public SafeTensorsFile FileOf(string name) =>
        _fileOf.TryGetValue(name, out var p) ? Open(p) : throw new KeyNotFoundException($"{Folder}: checkpoint has no tensor '{name}'");

    public SafeTensorInfo Info(string name) => FileOf(name).Info(name);

    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null) => FileOf(name).Load(name, dtype, device);

    public long BytesOnDisk => Files.Sum(LinkedFile.Length);

    public void Dispose()
    {
        foreach (var f in _open.Values) f.Dispose();
        _open.Clear();
    }
}
