namespace PeftSharp.Models;

/// <summary>
/// transformers' <c>clean_up_tokenization</c> (tokenization_utils_base.py; transformers.js mirrors it), which decode
/// applies when tokenizer_config.json's <c>clean_up_tokenization_spaces</c> is true (Llama 3/3.1 set it): ten
/// replacements done one after the other over the whole text, each a single left-to-right pass as Python's
/// str.replace, so "a  ." becomes "a ." (not "a."). C#'s ordinal string.Replace scans the same way.
/// </summary>
static class TokenizationSpaces
{
    static readonly (string From, string To)[] Replacements =
    [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ];

    public static string CleanUp(string text)
    {
        foreach (var (from, to) in Replacements)
            if (text.Contains(from, StringComparison.Ordinal)) text = text.Replace(from, to, StringComparison.Ordinal);
        return text;
    }

    /// <summary>
    /// The largest cut of <paramref name="text"/> (which starts where a text may be cut) such that what follows cannot
    /// change the clean-up of what precedes: CleanUp(a + b) = CleanUp(a) + CleanUp(b) for a = text[..cut] and any b.
    /// A replacement can only span the cut where a, as the earlier replacements have left it, ends with an unfinished
    /// pattern of that replacement (" ", " '", " n", " n'", " 'v", " 'r"); checking each replacement on a as it then
    /// is also covers the cascades (a ' ' quote deleted by " ' " can leave " 'v" that " 've" completes later).
    /// A streamed text holds back only what follows the cut: usually nothing, or a space and a letter or two.
    /// </summary>
    public static int SafeCut(string text)
    {
        int cut = text.Length;
        while (cut > 0 && !IsSafeEnd(text[..cut])) cut--;
        return cut;
    }

    static bool IsSafeEnd(string a)
    {
        foreach (var (from, to) in Replacements)
        {
            for (int n = 1; n < from.Length; n++)
                if (a.EndsWith(from.AsSpan(0, n), StringComparison.Ordinal)) return false;
            if (a.Contains(from, StringComparison.Ordinal)) a = a.Replace(from, to, StringComparison.Ordinal);
        }
        return true;
    }
}
