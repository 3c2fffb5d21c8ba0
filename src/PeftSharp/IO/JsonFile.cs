using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.IO;

/// <summary>The JSON files of model and adapter folders (config.json, tokenizer.json, adapter_config.json, ...).</summary>
public static class JsonFile
{
    /// <summary>A file holding one JSON object; malformed JSON or another kind of value is an error naming the file.</summary>
    public static JsonObject ReadObject(string path)
    {
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})"); }
    }
}
