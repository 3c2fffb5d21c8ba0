using PeftSharp.IO.Gguf;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// What `export gguf` and `export ollama` share: the base (--model), the adapters merged into it (--adapter), the
/// output (--out), the tensor type (--type), --allow-base-mismatch, and their checks. Each command declares the
/// options (overriding these properties) with its own help text and default type, since the two differ in what --out
/// is (a file, a folder) and in what --model and --adapter accept; the checks and their errors are these, once.
/// </summary>
public abstract class ExportSettings : CommandSettings
{
    /// <summary>--model: the base folder (a Hub repo id becomes its snapshot folder once validated).</summary>
    public abstract string Model { get; set; }

    /// <summary>--adapter: the adapters to merge (or, for ollama --separate-adapter, the one kept apart).</summary>
    public abstract string[] Adapters { get; set; }

    /// <summary>--out: where the export goes.</summary>
    public abstract string Out { get; set; }

    /// <summary>--type: the GGUF tensor type, as <see cref="GgufModelExport.ParseType"/> reads it.</summary>
    public abstract string Type { get; set; }

    /// <summary>--allow-base-mismatch: merge adapters whose recorded base fingerprint differs from --model.</summary>
    public abstract bool AllowBaseMismatch { get; set; }

    /// <summary>--type as a GGUF file type (valid once <see cref="Validate"/> passed).</summary>
    internal GgufFileType FileType => GgufModelExport.ParseType(Type);

    public sealed override ValidationResult Validate()
    {
        if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
        if (string.IsNullOrWhiteSpace(Out)) return ValidationResult.Error("--out is required");
        try { GgufModelExport.ParseType(Type); }
        catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
        if (ValidateMore() is { Successful: false } more) return more;
        // Last, so a bad flag is reported before anything is downloaded.
        if (HubCli.TryResolve(Model, "--model", out var folder) is { Successful: false } bad) return bad;
        Model = folder;
        return ValidationResult.Success();
    }

    /// <summary>A command's own checks, after the shared ones and before --model is resolved.</summary>
    protected virtual ValidationResult ValidateMore() => ValidationResult.Success();
}
