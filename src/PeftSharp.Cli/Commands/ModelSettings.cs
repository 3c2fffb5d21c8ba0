using System.ComponentModel;
using PeftSharp.IO;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>Options every command that loads a model shares.</summary>
public class ModelSettings : CommandSettings
{
    [CommandOption("--model <DIR>")]
    [Description("Hugging Face model folder (config.json, model.safetensors or shards, tokenizer.json), or a Hub repo id ORG/NAME or ORG/NAME@REV (downloaded into the shared cache)")]
    public string Model { get; set; } = "";

    /// <summary>--model as given (a repo id stays a repo id here while <see cref="Model"/> becomes its snapshot folder).</summary>
    public string ModelGiven { get; private set; } = "";

    [CommandOption("--device <DEVICE>")]
    [Description("cpu or cuda (cuda needs TorchSharp's CUDA package)")]
    [DefaultValue("cpu")]
    public string Device { get; set; } = "cpu";

    [CommandOption("--dtype <DTYPE>")]
    [Description("Compute dtype: fp32 (default), bf16, fp16")]
    [DefaultValue("fp32")]
    public string Dtype { get; set; } = "fp32";

    [CommandOption("--threads <N>")]
    [Description("CPU threads for tensor maths (default: libtorch's, one per core); serve runs best leaving one core to HTTP")]
    public int? Threads { get; set; }

    public override ValidationResult Validate()
    {
        if (CliOptions.NonFiniteNumber(this) is { } nonFinite) return ValidationResult.Error(nonFinite);
        if (Threads is <= 0) return ValidationResult.Error($"--threads must be positive (got {Threads})");
        if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
        if (Device is not ("cpu" or "cuda") && !Device.StartsWith("cuda:")) return ValidationResult.Error($"--device: '{Device}' is not cpu or cuda");
        try { SafeTensorDtype.ParseComputeDtype(Dtype); }
        catch (ArgumentException e) { return ValidationResult.Error($"--dtype: {e.Message}"); }
        // Last, so a bad flag is reported before anything is downloaded. ModelGiven keeps what the user typed.
        ModelGiven = Model;
        var resolved = HubCli.TryResolve(Model, "--model", out var folder);
        Model = folder;
        return resolved;
    }

    public Device ResolveDevice() => ResolveDevice(Device);

    /// <summary>A --device value as a TorchSharp device, with a clear error when CUDA is asked for but absent.</summary>
    public static Device ResolveDevice(string name)
    {
        if (name.StartsWith("cuda") && !cuda.is_available())
            throw new InvalidOperationException("--device cuda: CUDA is not available (this build uses TorchSharp-cpu; reference TorchSharp-cuda-linux to use a GPU)");
        return torch.device(name);
    }

    public CausalLM LoadModel()
    {
        ApplyThreads(Threads);
        return ModelLoader.Load(Model, new LoadOptions { Dtype = SafeTensorDtype.ParseComputeDtype(Dtype), Device = ResolveDevice() });
    }

    /// <summary>
    /// --threads: libtorch's intra-op thread count for this process (null leaves libtorch's default); also where every
    /// command that runs the model settles MKL's code path, before its first matmul (Kernels/MklCodePath).
    /// </summary>
    public static void ApplyThreads(int? threads)
    {
        PeftSharp.Kernels.MklCodePath.Ensure();
        if (threads is int n) set_num_threads(n);
    }
}
