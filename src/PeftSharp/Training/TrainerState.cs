using System.Text.Json;
using PeftSharp.Data;

namespace PeftSharp.Training;

/// <summary>The scalar part of a checkpoint (trainer_state.json): enough, with the tensors, to continue exactly.</summary>
public sealed record TrainerState(int Step, int TotalSteps, int DataEpoch, int DataIndex, ulong DataSeed, ulong Seed, double LearningRate, string Method)
{
    public DataPosition DataPosition => new(DataEpoch, DataIndex, DataSeed);

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static TrainerState Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not a checkpoint (trainer_state.json missing)", path);
        try { return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: unreadable trainer state ({e.Message})"); }
    }
}
