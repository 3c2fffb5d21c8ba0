namespace PeftSharp.Bench;

public interface IBench
{
    string Name { get; }
    string Description { get; }
    int Run(string[] args);
}

public static class BenchStats
{
    /// <summary>The middle value (the upper one of an even count), as every bench reports its timings.</summary>
    public static double Median(IEnumerable<double> xs)
    {
        var sorted = xs.Order().ToList();
        return sorted[sorted.Count / 2];
    }
}

/// <summary>Tiny --key value parser shared by the benches.</summary>
public sealed class BenchArgs(string[] args)
{
    public string Get(string key, string fallback)
    {
        int i = Array.LastIndexOf(args, "--" + key);   // the last one wins, as in argparse: scripts append overrides to defaults
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
    public int Int(string key, int fallback) => int.Parse(Get(key, fallback.ToString()));
    public double Double(string key, double fallback) => double.Parse(Get(key, fallback.ToString(System.Globalization.CultureInfo.InvariantCulture)), System.Globalization.CultureInfo.InvariantCulture);
    public bool Flag(string key) => Array.IndexOf(args, "--" + key) >= 0;
}
