namespace PeftSharp.Tests;

/// <summary>A small preference (DPO/ORPO) data file: used by the training tests here and the CLI tests in PeftSharp.Cli.Tests.</summary>
public static class PreferencePairs
{
    /// <summary>Writes <paramref name="n"/> prompt/chosen/rejected rows to dir/p.jsonl and returns its path.</summary>
    public static string Write(string dir, int n = 7)
    {
        string path = Path.Combine(dir, "p.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, n).Select(i => $"{{\"prompt\":\"x{i} ->\",\"chosen\":\" {i}\",\"rejected\":\" {i}{i}!\"}}"));
        return path;
    }
}
