using System.Text.Json;
using System.Text.Json.Serialization;
using PeftSharp.Memory;
using PeftSharp.Training.Optim;
using PeftSharp.Training.Preference;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// Source-generated JSON of a run's files: run.json (<see cref="TrainerOptions"/>, with <see cref="PreferenceOptions"/> for
/// DPO/ORPO) and each checkpoint's trainer_state.json (<see cref="TrainerState"/>). Keys and enum values in snake_case;
/// the optimiser and the compute dtype in the CLI's spellings (adamw-8bit, bf16).
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    Converters = [typeof(SnakeCaseEnumConverter<LrScheduleKind>), typeof(SnakeCaseEnumConverter<PreferenceMethod>), typeof(SnakeCaseEnumConverter<DpoLossType>)])]
[JsonSerializable(typeof(TrainerOptions))]
[JsonSerializable(typeof(TrainerState))]
[JsonSerializable(typeof(PreferenceOptions))]
internal sealed partial class TrainingJsonContext : JsonSerializerContext;

/// <summary>An enum as its snake_case name ("cosine", "dpo"), as run.json has always spelled them.</summary>
internal sealed class SnakeCaseEnumConverter<T>() : JsonStringEnumConverter<T>(JsonNamingPolicy.SnakeCaseLower) where T : struct, Enum;

/// <summary><see cref="OptimizerKind"/> as the CLI's --optimizer spells it (<see cref="PlanNames.Name(OptimizerKind)"/>; read by <see cref="OptimizerFactory.Parse"/>).</summary>
internal sealed class OptimizerJsonConverter : JsonConverter<OptimizerKind>
{
    public override OptimizerKind Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        try { return OptimizerFactory.Parse(reader.GetString() ?? ""); }
        catch (ArgumentException e) { throw new JsonException(e.Message); }
    }

    public override void Write(Utf8JsonWriter writer, OptimizerKind value, JsonSerializerOptions options) => writer.WriteStringValue(PlanNames.Name(value));
}

/// <summary>A compute dtype as fp32, bf16 or fp16 (<see cref="ComputeDtype.Name"/>; "auto" is resolved before a run, so never stored).</summary>
internal sealed class ComputeDtypeJsonConverter : JsonConverter<ScalarType>
{
    public override ScalarType Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        try { return ComputeDtype.Parse(reader.GetString() ?? "", "compute_dtype") ?? throw new JsonException("compute_dtype: 'auto' is not a resolved dtype (fp32, bf16, fp16)"); }
        catch (ArgumentException e) { throw new JsonException(e.Message); }
    }

    public override void Write(Utf8JsonWriter writer, ScalarType value, JsonSerializerOptions options) => writer.WriteStringValue(ComputeDtype.Name(value));
}
