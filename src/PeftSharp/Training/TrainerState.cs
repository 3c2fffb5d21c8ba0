using System.Text.Json;
using PeftSharp.Data;

namespace PeftSharp.Training;

/// <summary>The scalar part of a checkpoint (trainer_state.json): enough, with the tensors, to continue exactly.</summary>
internal sealed record TrainerState(int Step, int TotalSteps, int DataEpoch, int DataIndex, ulong DataSeed, ulong Seed, double LearningRate, string Method)
{
    public DataPosition DataPosition => new(DataEpoch, DataIndex, DataSeed);

    public string ToJson() => JsonSerializer.Serialize(this, TrainingJsonContext.Default.TrainerState);

    /// <summary>
    /// Checks a loaded state against the run resuming it: the step within 0..total and the data position where that
    /// many steps of <paramref name="batchSize"/> x <paramref name="accumulation"/> over <paramref name="sequences"/>
    /// sequences leave the loader. A hand-edited or foreign trainer_state.json is refused, naming the file.
    /// </summary>
    public void Validate(string path, int totalSteps, int sequences, int batchSize, int accumulation)
    {
        if (Step < 0 || Step > totalSteps)
            throw new InvalidDataException($"{path}: step {Step} is outside this run's 0..{totalSteps}");
        if (DataEpoch < 0 || DataIndex < 0 || DataIndex > sequences)
            throw new InvalidDataException($"{path}: data position (epoch {DataEpoch}, index {DataIndex}) is outside the data ({sequences} sequences)");
        var (epoch, index) = PositionAfter(Step, sequences, batchSize, accumulation);
        if (epoch != DataEpoch || index != DataIndex)
            throw new InvalidDataException($"{path}: data position (epoch {DataEpoch}, index {DataIndex}) does not match step {Step} (expected epoch {epoch}, index {index}); was the data or batch size changed?");
    }

    /// <summary>Where <see cref="BatchLoader"/> stands after <paramref name="steps"/> optimiser steps (same arithmetic, no data).</summary>
    static (int Epoch, int Index) PositionAfter(int steps, int sequences, int batchSize, int accumulation)
    {
        int epoch = 0, index = 0;
        for (long b = 0; b < (long)steps * accumulation; b++)
        {
            if (index >= sequences) { epoch++; index = 0; }
            index += Math.Min(batchSize, sequences - index);
        }
        return (epoch, index);
    }

    public static TrainerState Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not a checkpoint (trainer_state.json missing)", path);
        try { return JsonSerializer.Deserialize(File.ReadAllText(path), TrainingJsonContext.Default.TrainerState) ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: unreadable trainer state ({e.Message})"); }
    }
}
