using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.IO;

/// <summary>The JSON files of model and adapter folders (config.json, tokenizer.json, adapter_config.json, ...).</summary>
internal static class JsonFile
{
    /// <summary>Larger than any tokenizer.json (tens of MB); a bigger "JSON" file is refused before it is read.</summary>
    public const long DefaultMaxBytes = 1L << 30;

    /// <summary>
    /// A file holding one JSON object; malformed JSON, another kind of value or a file over <paramref name="maxBytes"/>
    /// is an error naming the file.
    /// </summary>
    public static JsonObject ReadObject(string path, long maxBytes = DefaultMaxBytes)
    {
        long size = new FileInfo(path).Length;
        if (size > maxBytes) throw new InvalidDataException($"{path}: {size:N0} bytes, more than a file of this kind holds (limit {maxBytes:N0})");
        try { return JsonNode.Parse(Data.TextLines.ReadAll(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})"); }
    }
}
