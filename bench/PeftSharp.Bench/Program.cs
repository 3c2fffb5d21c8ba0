using PeftSharp.Bench;

// Each benchmark is one subcommand in its own file; this only dispatches.
var benches = new Dictionary<string, Func<string[], int>>
{
    ["lora-overhead"] = LoraOverheadBench.Run,
};
if (args.Length == 0 || !benches.TryGetValue(args[0], out var bench))
{
    Console.Error.WriteLine($"usage: dotnet run -c Release --project bench/PeftSharp.Bench -- <{string.Join("|", benches.Keys)}> [options]");
    return 2;
}
return bench(args[1..]);
