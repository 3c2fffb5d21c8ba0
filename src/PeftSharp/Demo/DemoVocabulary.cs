namespace PeftSharp.Demo;

/// <summary>The closed word lists the demo corpus and task are written in (all lower case, one token each).</summary>
internal static class DemoVocabulary
{
    public static readonly string[] Names = ["mira", "tobin", "sela", "okar", "lune", "pell", "dara", "fenn", "ivo", "rena", "kaso", "yul"];
    public static readonly string[] Places = ["tolsk", "varn", "ebbin", "corra", "miln", "zeth", "aurel", "dovi"];
    public static readonly string[] Colours = ["red", "blue", "green", "gold", "grey", "white", "black", "pink"];
    public static readonly string[] Animals = ["fox", "owl", "cat", "hare", "wolf", "bee", "crow", "frog"];
    public static readonly string[] Objects = ["cup", "hat", "box", "key", "lamp", "rope", "coin", "drum"];
    public static readonly string[] Sizes = ["big", "small", "old", "young", "quiet", "loud"];
    public static readonly string[] Numbers =
    [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
    ];
    public static readonly string[] Function =
    [
        "the", "a", "is", "in", "lives", "likes", "has", "and", "plus", "minus", "with", "to", "from", "goes",
        "sees", "near", "of", "colour", "code", "->", ".", ",",
    ];

    /// <summary>Every word, in id order after the special tokens.</summary>
    public static IEnumerable<string> All =>
        Function.Concat(Names).Concat(Places).Concat(Colours).Concat(Animals).Concat(Objects).Concat(Sizes).Concat(Numbers);
}
