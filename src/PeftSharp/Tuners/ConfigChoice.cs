using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace PeftSharp.Tuners;

/// <summary>
/// The one reader of an adapter_config.json key that takes one of PEFT's spellings (LoRA's init_lora_weights and bias,
/// prompt tuning's prompt_tuning_init): through the enum's source-generated converter, so reading and writing share the
/// spellings. A value outside them is one error form naming the file, the key, the value and the allowed spellings:
/// "FILE: 'bias' 'some' is not supported (none, all, lora_only)".
/// </summary>
internal static class ConfigChoice
{
    /// <summary>The value of <paramref name="key"/> in <paramref name="o"/>; absent or null is PEFT's default <paramref name="absent"/>.</summary>
    public static T Read<T>(JsonObject o, string key, JsonTypeInfo<T> type, T absent, string source) where T : struct, Enum
    {
        if (o[key] is not { } node) return absent;
        // The converter alone also reads a number or a numeric string as a value (JsonStringEnumConverter's integer
        // values: "prompt_tuning_init": 2 would be TEXT, "bias": 7 no value at all); only a value it writes back the
        // same way (and names a member: an undefined one is written as its number) is one of PEFT's spellings.
        try
        {
            var value = node.Deserialize(type);
            if (Enum.IsDefined(value) && JsonNode.DeepEquals(JsonSerializer.SerializeToNode(value, type), node)) return value;
        }
        catch (JsonException) { }
        string shown = node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? $"'{v.GetValue<string>()}'" : node.ToJsonString();
        throw new InvalidDataException($"{source}: '{key}' {shown} is not supported ({Spellings(type)})");
    }

    /// <summary>PEFT's spellings of every value of <typeparamref name="T"/>, in the enum's order, as its converter writes them.</summary>
    public static string Spellings<T>(JsonTypeInfo<T> type) where T : struct, Enum =>
        string.Join(", ", Enum.GetValues<T>().Select(value => JsonSerializer.SerializeToNode(value, type) switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
            var n => n!.ToJsonString(),
        }));
}
