using System.Text.Json;
using System.Text.Json.Serialization;

namespace PeftSharp;

/// <summary>
/// PEFT's <c>init_lora_weights</c>: how a fresh LoRA adapter's A and B start. In adapter_config.json PEFT writes
/// <see cref="True"/> and <see cref="False"/> as JSON booleans and the others as strings; <see cref="LoraInitJsonConverter"/>
/// keeps those spellings, so files stay byte-compatible with PEFT.
/// </summary>
[JsonConverter(typeof(LoraInitJsonConverter))]
public enum LoraInit
{
    /// <summary><c>true</c>: Kaiming-uniform A, zero B, so a fresh adapter leaves the outputs unchanged (PEFT's default).</summary>
    True,
    /// <summary><c>false</c>: both A and B random (a non-identity adapter; PEFT uses it in tests).</summary>
    False,
    /// <summary><c>"gaussian"</c>: A ~ N(0, 1/r), zero B.</summary>
    Gaussian,
    /// <summary><c>"pissa"</c>: A and B from the principal singular vectors of the base weight, which keeps the residual.</summary>
    Pissa,
}

/// <summary>
/// PEFT's <c>bias</c>: which biases train with the adapter. PeftSharp trains none of them, so only <see cref="None"/> is
/// accepted; the other two are read (PEFT writes them) to refuse them by name.
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<LoraBias>))]
public enum LoraBias
{
    /// <summary><c>"none"</c>: no bias trains.</summary>
    [JsonStringEnumMemberName("none")] None,
    /// <summary><c>"all"</c>: every bias of the model trains (not supported).</summary>
    [JsonStringEnumMemberName("all")] All,
    /// <summary><c>"lora_only"</c>: the biases of the adapted modules train (not supported).</summary>
    [JsonStringEnumMemberName("lora_only")] LoraOnly,
}

/// <summary>PEFT's spellings of <see cref="LoraInit"/>: the one table the JSON converter and the CLI's <c>--init</c> use.</summary>
internal static class LoraInitNames
{
    /// <summary>The accepted spellings, in PEFT's order (for error messages).</summary>
    public const string Choices = "true, false, gaussian, pissa";

    /// <summary>PEFT's spelling of <paramref name="init"/> (as a string; adapter_config.json writes true/false as booleans).</summary>
    public static string Name(LoraInit init) => init switch
    {
        LoraInit.True => "true",
        LoraInit.False => "false",
        LoraInit.Gaussian => "gaussian",
        LoraInit.Pissa => "pissa",
        _ => throw new ArgumentOutOfRangeException(nameof(init), init, $"not one of {Choices}"),
    };

    /// <summary>The init <paramref name="text"/> names (PEFT's spelling, case as PEFT writes it), or null when none.</summary>
    public static LoraInit? Parse(string text) => text switch
    {
        "true" => LoraInit.True,
        "false" => LoraInit.False,
        "gaussian" => LoraInit.Gaussian,
        "pissa" => LoraInit.Pissa,
        _ => null,
    };
}

/// <summary>
/// Reads <c>init_lora_weights</c> as PEFT writes it (a JSON boolean, or one of the strings) and writes it back the
/// same way. Anything else is a <see cref="JsonException"/>; <see cref="LoraConfig.FromJson"/> turns it into an error
/// naming the key and file.
/// </summary>
internal sealed class LoraInitJsonConverter : JsonConverter<LoraInit>
{
    /// <inheritdoc/>
    public override LoraInit Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.True => LoraInit.True,
        JsonTokenType.False => LoraInit.False,
        JsonTokenType.String when LoraInitNames.Parse(reader.GetString()!) is { } init => init,
        _ => throw new JsonException($"not one of {LoraInitNames.Choices}"),
    };

    /// <inheritdoc/>
    public override void Write(Utf8JsonWriter writer, LoraInit value, JsonSerializerOptions options)
    {
        if (value is LoraInit.True or LoraInit.False) writer.WriteBooleanValue(value == LoraInit.True);
        else writer.WriteStringValue(LoraInitNames.Name(value));
    }
}

/// <summary>Source-generated JSON for the LoRA config's choices (no reflection at the adapter_config.json edge).</summary>
[JsonSerializable(typeof(LoraInit))]
[JsonSerializable(typeof(LoraBias))]
internal sealed partial class LoraJsonContext : JsonSerializerContext;
