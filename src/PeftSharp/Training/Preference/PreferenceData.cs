using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The tokenised pairs of a preference run: training pairs, held-out pairs (an eval file, or a seeded split of the
/// training file) and, for exact-match accuracy, the eval prompts with their chosen response as the answer.
/// </summary>
internal sealed record PreferenceData(IReadOnlyList<TokenizedPair> Train, PreferenceStats TrainStats,
    IReadOnlyList<TokenizedPair> Eval, PreferenceStats? EvalStats, IReadOnlyList<PromptAnswer> EvalPrompts)
{
    /// <paramref name="chat"/> renders conversational pairs (the model's chat template; the simple format when null).
    public static PreferenceData Load(string trainPath, TextTokenizer tokenizer, int maxLength, string? evalPath = null, double evalSplit = 0, ulong seed = 0,
        Chat.ChatPrompter? chat = null)
    {
        if (evalSplit is < 0 or >= 1) throw new ArgumentException($"eval split {evalSplit} must be in [0, 1)");
        var train = PreferenceReader.Read(trainPath, chat);
        IReadOnlyList<PreferencePair> eval = [];
        if (evalPath is not null) eval = PreferenceReader.Read(evalPath, chat);
        else if (evalSplit > 0)
        {
            var shuffled = train.ToList();
            new SplitMix64(seed ^ 0xD1B54A32D192ED03UL).Shuffle(shuffled);   // the same split rule as TrainingData
            int n = (int)Math.Round(train.Count * evalSplit);
            if (n == 0 || n == train.Count)
                throw new InvalidDataException($"{trainPath}: eval split {evalSplit} of {train.Count} pairs leaves {(n == 0 ? "no eval" : "no training")} pairs");
            eval = shuffled.Take(n).ToList();
            train = shuffled.Skip(n).ToList();
        }
        var (trainPairs, trainStats) = Tokenize(train, tokenizer, maxLength);
        if (trainPairs.Count == 0) throw new InvalidDataException($"{trainPath}: no pair fits --max-seq {maxLength} ({trainStats})");
        if (eval.Count == 0) return new PreferenceData(trainPairs, trainStats, [], null, []);
        var (evalPairs, evalStats) = Tokenize(eval, tokenizer, maxLength);
        var prompts = evalPairs.Select(p => p.Rendered ? RenderedPromptAnswer(p, tokenizer) : new PromptAnswer(p.Chosen.Ids[..p.PromptLength], AnswerTokens(p.Chosen, p.PromptLength, tokenizer.EosId)))
            .Where(p => p.Prompt.Length > 0 && p.Answer.Length > 0 && p.Prompt.Length + p.Answer.Length < maxLength).ToList();
        return new PreferenceData(trainPairs, trainStats, evalPairs, evalStats, prompts);
    }

    /// <summary>The chosen response's tokens without the final EOS (exact match expects them, then EOS).</summary>
    static int[] AnswerTokens(TokenSequence s, int promptLength, int? eos)
    {
        int end = s.Length;
        if (eos is int e && end > promptLength && s.Ids[end - 1] == e) end--;
        return s.Ids[promptLength..end];
    }

    /// <summary>
    /// A template-rendered pair's prompt and answer, as for SFT chat data: the chosen reply's ids without its closing
    /// special tokens, the first of which (the end-of-turn marker) exact match accepts after the answer besides EOS.
    /// </summary>
    static PromptAnswer RenderedPromptAnswer(TokenizedPair p, TextTokenizer tokenizer)
    {
        var special = tokenizer.SpecialTokens.Values.ToHashSet();
        int end = Array.FindLastIndex(p.Chosen.Labels, l => l != TokenSequence.Ignore) + 1;
        int keep = end;
        while (keep > p.PromptLength && special.Contains(p.Chosen.Ids[keep - 1])) keep--;
        return new PromptAnswer(p.Chosen.Ids[..p.PromptLength], p.Chosen.Ids[p.PromptLength..keep]) { EndIds = keep < end ? [p.Chosen.Ids[keep]] : [] };
    }

    /// <summary>
    /// Tokenises each side whole (prompt + response, as SFT data). A pair whose longer side exceeds <paramref name="maxLength"/>
    /// keeps its prompt and has its responses cut to fit (counted, first one named); one whose prompt leaves no room for a
    /// response, or whose responses become equal once cut, is dropped (counted, first one named).
    /// </summary>
    public static (List<TokenizedPair> Pairs, PreferenceStats Stats) Tokenize(IReadOnlyList<PreferencePair> pairs, TextTokenizer tokenizer, int maxLength)
    {
        if (maxLength < 2) throw new ArgumentException($"max sequence length {maxLength} must be at least 2");
        var kept = new List<TokenizedPair>();
        int truncated = 0, dropped = 0;
        string? firstTruncated = null, firstDropped = null;
        foreach (var p in pairs)
        {
            // Each side is encoded whole, as SFT examples are (a response encoded apart would start with a SentencePiece
            // "▁" the model never produces after the prompt; TRL's DPOTrainer does encode them apart). The shared
            // prompt ends where the first side's loss begins: both sides' ids agree with the prompt's up to there.
            var chosen = SequenceBuilder.Tokenize(p.WithResponse(p.Chosen), tokenizer, tokenizer.EosId);
            var rejected = SequenceBuilder.Tokenize(p.WithResponse(p.Rejected), tokenizer, tokenizer.EosId);
            int promptLength = Math.Min(FirstLabelled(chosen), FirstLabelled(rejected));
            if (chosen.Length > maxLength || rejected.Length > maxLength)
            {
                chosen = Cut(chosen, maxLength);
                rejected = Cut(rejected, maxLength);
                if (promptLength >= maxLength - 1 || chosen.Ids.SequenceEqual(rejected.Ids) || chosen.LossTokens == 0 || rejected.LossTokens == 0)
                {
                    dropped++;
                    firstDropped ??= p.Source;
                    continue;
                }
                truncated++;
                firstTruncated ??= p.Source;
            }
            kept.Add(new TokenizedPair(chosen, rejected, promptLength, p.Source) { Rendered = p.Rendered });
        }
        var stats = new PreferenceStats(pairs.Count, kept.Count, truncated, dropped, firstTruncated, firstDropped,
            kept.Sum(k => (long)k.Chosen.LossTokens + k.Rejected.LossTokens));
        return (kept, stats);
    }

    static int FirstLabelled(TokenSequence s)
    {
        int i = Array.FindIndex(s.Labels, l => l != TokenSequence.Ignore);
        return i < 0 ? s.Length : i;
    }

    static TokenSequence Cut(TokenSequence s, int maxLength) => s.Length <= maxLength ? s : new TokenSequence(s.Ids[..maxLength], s.Labels[..maxLength]);
}
