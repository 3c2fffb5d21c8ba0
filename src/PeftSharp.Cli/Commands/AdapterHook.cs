using PeftSharp.Models;

namespace PeftSharp.Cli.Commands;

/// <summary>Where --adapter flags are applied to a loaded model (a seam for tests and other tuners).</summary>
public static class AdapterHook
{
    public static Func<CausalLM, IReadOnlyList<string>, bool, AdapterCli.Applied> Apply { get; set; } = AdapterCli.Apply;
}
