using PeftSharp.IO;
using PeftSharp.Memory;
using PeftSharp.Quantization;

namespace PeftSharp.Models;

/// <summary>
/// A checkpoint's tensors checked against what its config implies, from headers alone (nothing is loaded): the
/// tensors the config needs that are absent, those it does not use, and those stored with another shape.
/// The expected list comes from the planner's <see cref="ModelShape"/>, whose names and counts the engine's
/// parameters are tested to match, so the check runs for any size of model without building it.
/// </summary>
internal sealed record CheckpointAudit(IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected, IReadOnlyList<string> Misshaped)
{
    public bool Complete => Missing.Count == 0 && Unexpected.Count == 0 && Misshaped.Count == 0;

    /// <summary>Every tensor name the shape implies, with its [out, in] / [rows, dim] / [dim] shape.</summary>
    public static Dictionary<string, long[]> ExpectedTensors(ModelShape shape)
    {
        var expected = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var m in shape.Modules.Where(m => !m.Tied))
        {
            expected[m.Name + ".weight"] = m.Kind switch
            {
                ModuleKind.Linear => [m.Out, m.In],
                ModuleKind.Embedding => [m.In, m.Out],
                _ => [m.Out],
            };
            if (m.Bias) expected[m.Name + ".bias"] = [m.Out];
        }
        return expected;
    }

    public static CheckpointAudit Check(CheckpointReader reader, ModelShape shape)
    {
        var expected = ExpectedTensors(shape);
        var missing = expected.Keys.Where(n => !reader.Contains(n)).Order(StringComparer.Ordinal).ToList();
        var misshaped = new List<string>();
        foreach (var (name, dims) in expected.Where(e => reader.Contains(e.Key)).OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            // A bitsandbytes 4-bit weight is stored packed; its quant state records the dense shape.
            if (BnbCheckpoint.LooksQuantized(reader, name)) continue;
            var actual = reader.Info(name).Shape;
            if (!actual.SequenceEqual(dims))
                misshaped.Add($"{name} [{string.Join(", ", actual)}], config implies [{string.Join(", ", dims)}]");
        }
        var unexpected = reader.Names.Where(n => !expected.ContainsKey(n) && !BnbCheckpoint.IsQuantStateKey(n) && !ModelLoader.Ignorable(n))
            .Order(StringComparer.Ordinal).ToList();
        return new CheckpointAudit(missing, unexpected, misshaped);
    }
}
