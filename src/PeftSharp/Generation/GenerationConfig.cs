using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Generation;

/// <summary>
/// A model folder's generation_config.json, as Hugging Face's generate reads it: eos_token_id (an int or a list) are
/// stop ids, and the sampling fields are defaults that explicit flags / request fields override. Fields the file
/// does not set leave the caller's defaults alone. do_sample false (HF's default) means greedy whatever temperature
/// says; do_sample true samples at the file's temperature (HF's default 1.0 when absent).
/// </summary>
internal sealed record GenerationConfig
{
    /// <summary>The file's name in a model folder.</summary>
    public const string FileName = "generation_config.json";

    /// <summary>eos_token_id: ids that end generation (besides config.json's and the tokenizer's EOS); empty when unset.</summary>
    public int[] EosTokenIds { get; init; } = [];
    /// <summary>do_sample: false = greedy, true = sample at <see cref="Temperature"/>; null when unset.</summary>
    public bool? DoSample { get; init; }
    /// <summary>temperature (&gt;= 0), used when <see cref="DoSample"/> is true; null when unset.</summary>
    public double? Temperature { get; init; }
    /// <summary>top_p, in (0, 1]; null when unset.</summary>
    public double? TopP { get; init; }
    /// <summary>top_k (&gt;= 0, 0 = off); null when unset.</summary>
    public int? TopK { get; init; }
    /// <summary>repetition_penalty (&gt; 0, 1 = off); null when unset.</summary>
    public double? RepetitionPenalty { get; init; }
    /// <summary>max_new_tokens (&gt;= 0); null when unset.</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>The folder's generation_config.json, or an empty config when there is none. Malformed: an error naming file and field.</summary>
    public static GenerationConfig Load(string modelFolder)
    {
        string path = Path.Combine(modelFolder, FileName);
        if (!File.Exists(path)) return new GenerationConfig();
        var o = JsonFile.ReadObject(path);
        var c = new GenerationConfig
        {
            EosTokenIds = o["eos_token_id"] switch
            {
                null => [],
                JsonArray a => a.Select((x, i) => Int(x, $"eos_token_id[{i}]", path) ?? throw Bad(path, $"eos_token_id[{i}]", "an integer", x)).ToArray(),
                var x => [Int(x, "eos_token_id", path)!.Value],
            },
            DoSample = o["do_sample"] switch
            {
                null => null,
                JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
                var x => throw Bad(path, "do_sample", "true or false", x),
            },
            Temperature = Number(o, "temperature", path),
            TopP = Number(o, "top_p", path),
            TopK = Int(o["top_k"], "top_k", path),
            RepetitionPenalty = Number(o, "repetition_penalty", path),
            MaxNewTokens = Int(o["max_new_tokens"], "max_new_tokens", path),
        };
        if (c.Temperature is < 0) throw Bad(path, "temperature", "a number >= 0", o["temperature"]);
        if (c.TopP is not null and (<= 0 or > 1)) throw Bad(path, "top_p", "a number in (0, 1]", o["top_p"]);
        if (c.TopK is < 0) throw Bad(path, "top_k", "an integer >= 0", o["top_k"]);
        if (c.RepetitionPenalty is <= 0) throw Bad(path, "repetition_penalty", "a number > 0", o["repetition_penalty"]);
        if (c.MaxNewTokens is < 0) throw Bad(path, "max_new_tokens", "an integer >= 0", o["max_new_tokens"]);
        return c;
    }

    /// <summary>
    /// <paramref name="defaults"/> with the file's settings applied (the caller then applies what the user gave
    /// explicitly). Temperature follows do_sample: false = greedy, true = the file's temperature or 1.0, absent = unchanged.
    /// </summary>
    public SamplingOptions ApplyTo(SamplingOptions defaults) => defaults with
    {
        MaxNewTokens = MaxNewTokens ?? defaults.MaxNewTokens,
        Temperature = DoSample switch { false => 0, true => Temperature ?? 1.0, null => defaults.Temperature },
        TopP = TopP ?? defaults.TopP,
        TopK = TopK ?? defaults.TopK,
        RepetitionPenalty = RepetitionPenalty ?? defaults.RepetitionPenalty,
    };

    static double? Number(JsonObject o, string field, string path) => o[field] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.GetValue<double>(),
        var x => throw Bad(path, field, "a number", x),
    };

    static int? Int(JsonNode? node, string field, string path) => node switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out int i) => i,
        var x => throw Bad(path, field, "an integer", x),
    };

    static InvalidDataException Bad(string path, string field, string expected, JsonNode? got) =>
        new($"{path}: '{field}' must be {expected} (got {got?.ToJsonString() ?? "null"})");
}
