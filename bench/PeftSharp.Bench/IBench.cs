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

    /// <summary>
    /// The kernel benches' table: per side its median forward, backward and total ms (rounds in <paramref name="fwd"/> /
    /// <paramref name="bwd"/>, sides in the order of <paramref name="names"/>, the name column <paramref name="width"/> wide).
    /// </summary>
    public static void PrintFwdBwd(IReadOnlyList<string> names, IReadOnlyList<List<double>> fwd, IReadOnlyList<List<double>> bwd, int width)
    {
        Console.WriteLine($"{"side".PadRight(width)}{"fwd ms",9}{"bwd ms",9}{"total ms",10}");
        for (int s = 0; s < names.Count; s++)
        {
            double f = Median(fwd[s]), g = Median(bwd[s]);
            Console.WriteLine($"{names[s].PadRight(width)}{f,9:F2}{g,9:F2}{f + g,10:F2}");
        }
    }

    /// <summary>"LABEL fwd+bwd time = median (per round: ...)": side 0's forward + backward time over side 1's, round by round.</summary>
    public static void PrintFwdBwdRatio(string label, IReadOnlyList<List<double>> fwd, IReadOnlyList<List<double>> bwd)
    {
        var ratios = fwd[0].Zip(bwd[0], (f, g) => f + g).Zip(fwd[1].Zip(bwd[1], (f, g) => f + g), (x, y) => x / y).ToList();
        Console.WriteLine($"{label} fwd+bwd time = {Median(ratios):F2} (per round: {string.Join(", ", ratios.Select(x => x.ToString("F2")))})");
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
