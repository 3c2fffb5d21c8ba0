using System.Reflection;
using PeftSharp.Bench;

// Dispatcher: every IBench in this assembly is a subcommand.
var benches = Assembly.GetExecutingAssembly().GetTypes()
    .Where(t => typeof(IBench).IsAssignableFrom(t) && !t.IsAbstract)
    .Select(t => (IBench)Activator.CreateInstance(t)!)
    .ToDictionary(b => b.Name);
if (args.Length == 0 || !benches.TryGetValue(args[0], out var bench))
{
    Console.Error.WriteLine("usage: PeftSharp.Bench <bench> [options]\nbenches:");
    foreach (var b in benches.Values.OrderBy(b => b.Name)) Console.Error.WriteLine($"  {b.Name,-16} {b.Description}");
    return 2;
}
// Benches take their options loosely (unknown ones are ignored), so `<bench> --help` would run the bench: answer it here.
if (args.Skip(1).Any(a => a is "--help" or "-h"))
{
    Console.WriteLine($"{bench.Name}: {bench.Description}");
    return 0;
}
// Every bench runs on the MKL code path users get (settled before the first matmul; PEFTSHARP_MKL_INTEL_PATH=0: stock).
PeftSharp.Kernels.MklCodePath.Ensure();
return bench.Run(args[1..]);
