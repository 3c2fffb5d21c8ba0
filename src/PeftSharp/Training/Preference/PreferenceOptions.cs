namespace PeftSharp.Training.Preference;

/// <summary>dpo (Rafailov et al. 2023; reference = the model with the trained adapter off) or orpo (Hong et al. 2024; no reference).</summary>
internal enum PreferenceMethod { Dpo, Orpo }

/// <summary>DPO's loss: sigmoid (the paper's; with label smoothing, cDPO) or ipo (Azar et al. 2023, on length-averaged log-probs).</summary>
internal enum DpoLossType { Sigmoid, Ipo }

/// <summary>The knobs of a preference run (TRL's DPOConfig/ORPOConfig names in the comments).</summary>
internal sealed record PreferenceOptions
{
    public static readonly string[] MethodNames = ["dpo", "orpo"];

    public PreferenceMethod Method { get; init; } = PreferenceMethod.Dpo;
    /// <summary>beta: DPO's KL strength (0.1), ORPO's odds-ratio weight (TRL's ORPO default is also 0.1).</summary>
    public double Beta { get; init; } = 0.1;
    /// <summary>label_smoothing: the assumed probability that a label is flipped (cDPO); sigmoid loss only.</summary>
    public double LabelSmoothing { get; init; }
    public DpoLossType LossType { get; init; } = DpoLossType.Sigmoid;
    /// <summary>precompute_ref_log_probs: reference log-probs once for the whole dataset before training, not per batch.</summary>
    public bool PrecomputeReference { get; init; }

    public static bool IsPreferenceMethod(string name) => MethodNames.Contains(name);

    public static PreferenceMethod ParseMethod(string name) => name switch
    {
        "dpo" => PreferenceMethod.Dpo,
        "orpo" => PreferenceMethod.Orpo,
        _ => throw new ArgumentException($"--method: '{name}' is not dpo or orpo"),
    };

    public static DpoLossType ParseLossType(string name) => name switch
    {
        "sigmoid" => DpoLossType.Sigmoid,
        "ipo" => DpoLossType.Ipo,
        _ => throw new ArgumentException($"--loss-type: '{name}' is not sigmoid or ipo"),
    };

    public void Validate()
    {
        if (!(Beta > 0) || !double.IsFinite(Beta)) throw new ArgumentException($"--beta must be positive (got {Beta})");
        if (LabelSmoothing is < 0 or >= 0.5) throw new ArgumentException($"--label-smoothing must be in [0, 0.5) (got {LabelSmoothing})");
        if (LabelSmoothing > 0 && (Method != PreferenceMethod.Dpo || LossType != DpoLossType.Sigmoid))
            throw new ArgumentException("--label-smoothing applies to the DPO sigmoid loss only");
        if (Method == PreferenceMethod.Orpo && (LossType != DpoLossType.Sigmoid || PrecomputeReference))
            throw new ArgumentException("--loss-type and --precompute-ref are DPO options; ORPO has no reference model");
    }
}
