using System.Text.Json.Nodes;

namespace PeftSharp.Tests;

/// <summary>
/// The training tests' task, in the tiny fixture model's byte-level vocabulary: prompt "abc ->", completion " cba".
/// Example i is the same in every file, so <c>offset</c> picks examples a training file does not hold (for eval).
/// </summary>
public static class ReversalTask
{
    public static string Write(string dir, int n, int offset = 0)
    {
        string path = Path.Combine(dir, $"task{offset}.jsonl");
        File.WriteAllLines(path, Enumerable.Range(offset, n).Select(i =>
        {
            string w = new(Enumerable.Range(0, 3 + i % 3).Select(k => (char)('a' + (i * 7 + k * 3) % 26)).ToArray());
            return new JsonObject { ["prompt"] = $"{w} ->", ["completion"] = " " + new string(w.Reverse().ToArray()) }.ToJsonString();
        }));
        return path;
    }
}
