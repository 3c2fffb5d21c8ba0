namespace PeftSharp.Training.Optim;

/// <summary>An optimiser over a fixed set of parameters, as the trainer drives it.</summary>
public interface IOptimizer
{
    void Step();
    void ZeroGrad();
    double LearningRate { get; set; }
    /// <summary>Bytes of optimiser state (moments etc.) currently held.</summary>
    long StateBytes { get; }
    void SaveState(string path);
    void LoadState(string path);
}
