using PeftSharp.IO;
using PeftSharp.Training.Optim;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// A resumable checkpoint folder, written atomically: trainable.safetensors (the trained parameters by name,
/// plus the CPU RNG state), optimizer.safetensors, trainer_state.json (step, schedule, data position, seeds).
/// </summary>
internal static class Checkpoint
{
    public const string Params = "trainable.safetensors", Optimizer = "optimizer.safetensors", State = "trainer_state.json";
    const string RngKey = "__rng_state__";

    public static string Folder(string outDir, int step) => Path.Combine(outDir, "checkpoints", $"step-{step:D6}");

    public static void Save(string dir, ITrainingMethod method, IOptimizer optimizer, TrainerState state) => AtomicFile.WriteFolder(dir, tmp =>
    {
        using (var scope = NewDisposeScope())
        {
            var tensors = method.TrainableParameters.Select(p => (p.Name, p.P.detach().cpu())).ToList();
            tensors.Add((RngKey, random.get_rng_state()));
            SafeTensorsWriter.Write(Path.Combine(tmp, Params), tensors);
        }
        optimizer.SaveState(Path.Combine(tmp, Optimizer));
        File.WriteAllText(Path.Combine(tmp, State), state.ToJson());
    });

    /// <summary>Restores parameters, optimiser and RNG state; returns the scalar state.</summary>
    public static TrainerState Load(string dir, ITrainingMethod method, IOptimizer optimizer)
    {
        var state = TrainerState.Load(Path.Combine(dir, State));
        string paramsPath = Path.Combine(dir, Params);
        if (!File.Exists(paramsPath)) throw new FileNotFoundException($"{paramsPath}: checkpoint parameters missing", paramsPath);
        using (var file = new SafeTensorsFile(paramsPath))
        using (no_grad())
        {
            var expected = method.TrainableParameters.ToList();
            foreach (var (name, p) in expected)
            {
                if (!file.Contains(name)) throw new InvalidDataException($"{paramsPath}: has no tensor '{name}' (was it saved by a different method?)");
                using var t = file.Load(name, p.dtype, p.device);
                if (!t.shape.SequenceEqual(p.shape))
                    throw new InvalidDataException($"{paramsPath}: tensor '{name}' is [{string.Join(", ", t.shape)}], the model expects [{string.Join(", ", p.shape)}]");
                // A diverged checkpoint is no place to continue from (and never the "last good" one).
                if (!FiniteValues.All(t))
                    throw new InvalidDataException($"{paramsPath}: tensor '{name}' holds NaN or infinite values; resume from an earlier checkpoint");
                p.copy_(t);
            }
            int extra = file.Tensors.Count(t => t.Name != RngKey) - expected.Count;
            if (extra > 0) throw new InvalidDataException($"{paramsPath}: holds {extra} tensor(s) this method does not train");
            if (file.Contains(RngKey)) { using var rng = file.Load(RngKey); random.set_rng_state(rng); }
        }
        optimizer.LoadState(Path.Combine(dir, Optimizer));
        return state;
    }

    /// <summary>The run folder a --resume path belongs to: the path itself, or RUN for RUN/checkpoints/step-N.</summary>
    public static string RunFolder(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var parent = Path.GetDirectoryName(full);
        return File.Exists(Path.Combine(full, State)) && parent is not null && Path.GetFileName(parent) == "checkpoints"
            ? Path.GetDirectoryName(parent)! : path;
    }

    /// <summary>A checkpoint folder itself, or the latest checkpoint of a run folder.</summary>
    public static string Resolve(string path) => TryResolve(path)
        ?? throw new DirectoryNotFoundException($"{path}: no checkpoint to resume from (neither a checkpoint folder nor a run with checkpoints/step-*)");

    /// <summary><see cref="Resolve"/>, or null when there is no checkpoint.</summary>
    public static string? TryResolve(string path)
    {
        if (File.Exists(Path.Combine(path, State))) return path;
        string root = Path.Combine(path, "checkpoints");
        return Directory.Exists(root)
            ? Directory.GetDirectories(root, "step-*").Where(d => File.Exists(Path.Combine(d, State))).Order(StringComparer.Ordinal).LastOrDefault()
            : null;
    }
}
