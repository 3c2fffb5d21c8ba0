namespace PeftSharp.Training;

/// <summary>How the learning rate changes after warm-up (<see cref="TrainerOptions.Schedule"/>; the CLI's <c>--schedule</c>).</summary>
public enum LrScheduleKind
{
    /// <summary>Stays at the peak learning rate.</summary>
    Constant,
    /// <summary>Falls linearly from the peak to 0 at the last step.</summary>
    Linear,
    /// <summary>Falls along a half cosine from the peak to 0 at the last step.</summary>
    Cosine,
}

/// <summary>
/// Learning rate per optimiser step (0-based). Warm-up rises linearly to the peak, reaching peak*(k+1)/warmup
/// at step k (unlike HF's k/warmup, the first step is not wasted at lr 0); then constant, linear decay to 0
/// at <see cref="TotalSteps"/>, or cosine decay to 0.
/// </summary>
internal sealed record LrSchedule(LrScheduleKind Kind, double Peak, int WarmupSteps, int TotalSteps)
{
    public double At(int step)
    {
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        if (Kind == LrScheduleKind.Constant) return Peak;
        double progress = Math.Clamp((double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps), 0, 1);
        return Kind == LrScheduleKind.Linear ? Peak * (1 - progress) : Peak * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    public static LrScheduleKind Parse(string name) => name.ToLowerInvariant() switch
    {
        "constant" => LrScheduleKind.Constant,
        "linear" => LrScheduleKind.Linear,
        "cosine" => LrScheduleKind.Cosine,
        _ => throw new ArgumentException($"unknown learning-rate schedule '{name}' (constant, linear, cosine)"),
    };
}
