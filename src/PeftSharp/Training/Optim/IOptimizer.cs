namespace PeftSharp.Training.Optim;

/// <summary>
/// An optimiser over named parameters. State is keyed by parameter name, so a resumed run maps it back to the
/// same parameters and refuses state saved for different ones.
/// </summary>
internal interface IOptimizer : IDisposable
{
    /// <summary>Applies one update to every parameter that has a gradient.</summary>
    void Step();

    /// <summary>Zeroes the gradients of all parameters.</summary>
    void ZeroGrad();

    /// <summary>Set by a schedule before each step.</summary>
    double LearningRate { get; set; }

    /// <summary>Bytes of optimiser state, wherever it lives.</summary>
    long StateBytes { get; }

    /// <summary>Writes the state (atomically) as safetensors keyed by parameter name, with step counters in its metadata.</summary>
    void SaveState(string path);

    /// <summary>Restores state written by <see cref="SaveState"/>; fails naming the first mismatched parameter.</summary>
    void LoadState(string path);
}
