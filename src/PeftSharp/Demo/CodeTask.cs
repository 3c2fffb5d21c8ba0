using PeftSharp.Data;
using static PeftSharp.Demo.DemoVocabulary;

namespace PeftSharp.Demo;

/// <summary>
/// The demo fine-tuning task, which the pretrained base cannot do: a secret code maps each colour to a number
/// word, each animal to a place and each object to a name (fixed bijections drawn from the seed).
/// Prompt "code red fox cup ->", completion " seven tolsk mira". All 512 (colour, animal, object) triples
/// are split into train and eval, so eval triples are unseen combinations of codes seen in training:
/// exact match needs the three mappings and their order, not memorised answers.
/// </summary>
internal sealed class CodeTask
{
    readonly Dictionary<string, string> _code = new();

    public CodeTask(ulong seed = 7)
    {
        var rng = new SplitMix64(seed);
        Assign(Colours, Numbers.Skip(1).Take(12).ToArray(), rng);
        Assign(Animals, Places, rng);
        Assign(Objects, Names, rng);
    }

    void Assign(string[] from, string[] to, SplitMix64 rng)
    {
        var pool = to.ToList();
        foreach (var w in from) { int i = rng.Next(pool.Count); _code[w] = pool[i]; pool.RemoveAt(i); }
    }

    public string Encode(string word) => _code[word];

    public static string Prompt(string colour, string animal, string obj) => $"code {colour} {animal} {obj} ->";
    public string Completion(string colour, string animal, string obj) => $" {Encode(colour)} {Encode(animal)} {Encode(obj)}";

    /// <summary>All triples, shuffled by <paramref name="seed"/>, split into (train, eval) with <paramref name="evalCount"/> held out.</summary>
    public (List<(string Prompt, string Completion)> Train, List<(string Prompt, string Completion)> Eval) Split(int evalCount, ulong seed)
    {
        var all = (from c in Colours from a in Animals from o in Objects select (Prompt(c, a, o), Completion(c, a, o))).ToList();
        new SplitMix64(seed).Shuffle(all);
        return (all.Skip(evalCount).ToList(), all.Take(evalCount).ToList());
    }
}
