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

    /// <summary>
    /// An example's ids and labels. Its text is encoded whole, as Hugging Face encodes it (TRL's SFTTrainer encodes
    /// prompt + completion as one string): encoding the segments apart would give a SentencePiece tokenizer's
    /// completion its own leading "▁" (" Paris" after "A:" became "▁", "▁Paris"; "world" after "Hello" read
    /// " world") and split byte-level merges, so the model would learn tokens it never sees at inference.
    /// </summary>
    public static TokenSequence Tokenize(RawExample ex, TextTokenizer tokenizer, int? eos)
    {
        if (ex.Rendered) return EncodeWhole(ex.Segments, tokenizer); // the chat template wrote BOS and end-of-turn
        // The tokenizer's leading special tokens (a Llama BOS) start the example once, as context.
        var ids = new List<int>(tokenizer.Prefix);
        var labels = new List<int>(Enumerable.Repeat(TokenSequence.Ignore, tokenizer.Prefix.Length));
        var body = EncodeWhole(ex.Segments, tokenizer);
        ids.AddRange(body.Ids);
        labels.AddRange(body.Labels);
        if (eos is int e)
        {
            ids.Add(e);
            labels.Add(ex.Segments[^1].Trainable ? e : TokenSequence.Ignore);
        }
        return new TokenSequence(ids.ToArray(), labels.ToArray());
    }

    /// <summary>
    /// The segments' concatenation encoded at once with nothing added (for a rendered chat, as
    /// apply_chat_template(tokenize=True) does), a token learned when it lies in a trainable segment: boundaries are
    /// where the encodings of the text before each boundary stop agreeing with the whole (a token merged across a
    /// boundary into a trainable segment is learned).
    /// </summary>
    static TokenSequence EncodeWhole(IReadOnlyList<TextSegment> segments, TextTokenizer tokenizer)
    {
        string text = string.Concat(segments.Select(s => s.Text));
        int[] ids = tokenizer.Encode(text);
        int[] labels = Enumerable.Repeat(TokenSequence.Ignore, ids.Length).ToArray();
        int chars = 0;
        foreach (var seg in segments)
        {
            int start = chars;
            chars += seg.Text.Length;
            if (!seg.Trainable) continue;
            int a = CommonPrefix(ids, tokenizer.Encode(text[..start])), b = CommonPrefix(ids, tokenizer.Encode(text[..chars]));
            for (int t = a; t < b; t++) labels[t] = ids[t];
        }
        return new TokenSequence(ids, labels);
    }

    static int CommonPrefix(int[] a, int[] b)
    {
        int n = 0;
        while (n < a.Length && n < b.Length && a[n] == b[n]) n++;
        return n;
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
