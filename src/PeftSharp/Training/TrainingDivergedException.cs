namespace PeftSharp.Training;

/// <summary>The loss or gradient became NaN/inf; weights were not updated with it, and the last checkpoint is kept.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);
