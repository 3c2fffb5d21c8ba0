using PeftSharp.Models;

namespace PeftSharp.Data;

/// <summary>
/// Tokenises examples into <see cref="TokenSequence"/>s: segments are encoded one by one (so the loss mask is exact),
/// EOS ends every example (and is learned), over-long examples are cut to the maximum length and counted, and
/// with packing, consecutive short examples share one sequence. Packed examples attend to each other (no
/// block-diagonal mask): the usual simple packing, fine for short independent examples.
/// </summary>
internal static class SequenceBuilder
{
    public static (List<TokenSequence> Sequences, DataStats Stats) Build(IReadOnlyList<RawExample> examples, TextTokenizer tokenizer, int maxLength, bool packing)
    {
        if (maxLength < 2) throw new ArgumentException($"max sequence length {maxLength} must be at least 2");
        int? eos = tokenizer.EosId;
        var singles = new List<TokenSequence>();
        int truncated = 0, dropped = 0;
        long cut = 0;
        foreach (var ex in examples)
        {
            var seq = Tokenize(ex, tokenizer, eos);
            if (seq.Length > maxLength)
            {
                truncated++;
                cut += seq.Length - maxLength;
                seq = new TokenSequence(seq.Ids[..maxLength], seq.Labels[..maxLength]);
            }
            // Only labels from position 1 on are targets (position 0 has no context).
            if (seq.LossTokens == 0) { dropped++; continue; }
            singles.Add(seq);
        }
        var sequences = packing ? Pack(singles, maxLength) : singles;
        var stats = new DataStats(examples.Count, sequences.Count, sequences.Sum(s => (long)s.Length),
            sequences.Sum(s => (long)s.LossTokens), truncated, cut, dropped);
        return (sequences, stats);
    }

    public static TokenSequence Tokenize(RawExample ex, TextTokenizer tokenizer, int? eos)
    {
        if (ex.Rendered) return Chat.ChatMasking.Tokenize(ex, tokenizer); // the chat template wrote BOS and end-of-turn
        // The tokenizer's leading special tokens (a Llama BOS) start the example once, as context.
        var ids = new List<int>(tokenizer.Prefix);
        var labels = new List<int>(Enumerable.Repeat(TokenSequence.Ignore, tokenizer.Prefix.Length));
        foreach (var seg in ex.Segments)
        {
            var t = tokenizer.Encode(seg.Text);
            ids.AddRange(t);
            labels.AddRange(seg.Trainable ? t : Enumerable.Repeat(TokenSequence.Ignore, t.Length));
        }
        if (eos is int e)
        {
            ids.Add(e);
            labels.Add(ex.Segments[^1].Trainable ? e : TokenSequence.Ignore);
        }
        return new TokenSequence(ids.ToArray(), labels.ToArray());
    }

    static List<TokenSequence> Pack(List<TokenSequence> singles, int maxLength)
    {
        var packed = new List<TokenSequence>();
        var ids = new List<int>();
        var labels = new List<int>();
        foreach (var s in singles)
        {
            if (ids.Count + s.Length > maxLength && ids.Count > 0)
            {
                packed.Add(new TokenSequence(ids.ToArray(), labels.ToArray()));
                ids.Clear(); labels.Clear();
            }
            ids.AddRange(s.Ids);
            labels.AddRange(s.Labels);
        }
        if (ids.Count > 0) packed.Add(new TokenSequence(ids.ToArray(), labels.ToArray()));
        return packed;
    }
}
