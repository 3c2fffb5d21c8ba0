using PeftSharp.Models;

namespace PeftSharp.Cli.Commands;

/// <summary>Where --adapter flags are applied to a loaded model (set up by the adapter tuners).</summary>
public static class AdapterHook
{
    public static Action<CausalLM, IReadOnlyList<string>, bool>? Apply { get; set; } = (model, specs, allow) => AdapterCli.Apply(model, specs, allow);
}
