using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Chat;

/// <summary>
/// Conversations as templates see them: JSON objects with a string "role" and "content" (other fields, such as
/// "name", pass through to the template). Roles are those chat templates know; anything else is an error naming
/// where the message is, never a silent rendering.
/// </summary>
internal static class ChatMessages
{
    public static readonly string[] KnownRoles = ["system", "user", "assistant", "tool", "ipython", "developer"];

    /// <summary>Validates a "messages" array; <paramref name="where"/> (file:line, or a file) prefixes every error.</summary>
    public static List<JsonObject> FromJson(JsonNode? node, string where)
    {
        if (node is not JsonArray array) throw new InvalidDataException($"{where}: 'messages' must be an array of {{\"role\", \"content\"}} objects");
        var result = new List<JsonObject>();
        for (int i = 0; i < array.Count; i++)
        {
            if (array[i] is not JsonObject m) throw new InvalidDataException($"{where}: message {i + 1} must be an object with 'role' and 'content'");
            string role = m["role"] is JsonValue r && r.TryGetValue<string>(out var rs) ? rs
                : throw new InvalidDataException($"{where}: message {i + 1}: field 'role' must be a string");
            if (m["content"] is not JsonValue c || !c.TryGetValue<string>(out _))
                throw new InvalidDataException($"{where}: message {i + 1}: field 'content' must be a string");
            if (!KnownRoles.Contains(role))
                throw new InvalidDataException($"{where}: message {i + 1} has unknown role '{role}' (expected one of {string.Join(", ", KnownRoles)})");
            result.Add((JsonObject)m.DeepClone());
        }
        if (result.Count == 0) throw new InvalidDataException($"{where}: 'messages' is empty");
        return result;
    }

    /// <summary>A chat file: a JSON array of messages, or an object with "messages" (as in training data).</summary>
    public static List<JsonObject> ReadFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: chat file not found", path);
        JsonNode? root;
        try { root = JsonNode.Parse(Data.TextLines.ReadAll(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})"); }
        return FromJson(root is JsonObject o ? o["messages"] : root, path);
    }

    public static (string Role, string Content) Pair(JsonObject m) => (m["role"]!.GetValue<string>(), m["content"]!.GetValue<string>());
}
