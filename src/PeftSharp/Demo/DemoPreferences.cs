using System.Text.Json.Nodes;
using PeftSharp.Data;

namespace PeftSharp.Demo;

/// <summary>
/// The demo's preference pairs for DPO/ORPO: each task example's prompt, its right answer as "chosen" and, as "rejected",
/// a plausible wrong answer: the same answer with one of its three code words (picked by the seed) replaced by the code
/// of another word of the same kind, e.g. " seven tolsk mira" vs " seven tolsk kaso". Deterministic from the seed.
/// </summary>
internal static class DemoPreferences
{
    public static List<(string Prompt, string Chosen, string Rejected)> Pairs(CodeTask task, IEnumerable<(string Prompt, string Completion)> examples, ulong seed)
    {
        var rng = new SplitMix64(seed);
        string[][] kinds = [DemoVocabulary.Colours, DemoVocabulary.Animals, DemoVocabulary.Objects];
        var pairs = new List<(string, string, string)>();
        foreach (var (prompt, completion) in examples)
        {
            var words = prompt.Split(' ')[1..4];   // "code COLOUR ANIMAL OBJECT ->"
            int slot = rng.Next(3);
            var others = kinds[slot].Where(w => w != words[slot]).ToList();
            var wrong = (string[])words.Clone();
            wrong[slot] = rng.Pick(others);
            pairs.Add((prompt, completion, task.Completion(wrong[0], wrong[1], wrong[2])));
        }
        return pairs;
    }

    public static string Jsonl(IEnumerable<(string Prompt, string Chosen, string Rejected)> pairs, System.Text.Json.JsonSerializerOptions options) =>
        string.Concat(pairs.Select(p => new JsonObject { ["prompt"] = p.Prompt, ["chosen"] = p.Chosen, ["rejected"] = p.Rejected }.ToJsonString(options) + "\n"));
}
