using PeftSharp.Models;

namespace PeftSharp.Data;

/// <summary>
/// A prompt and the exact token ids the model should answer with (EOS not included). <see cref="EndIds"/>: ids that
/// close the answer besides EOS: the end-of-turn token of a chat-template rendering (&lt;|eot_id|&gt;,
/// &lt;end_of_turn&gt;), on which generation stops too.
/// </summary>
internal sealed record PromptAnswer(int[] Prompt, int[] Answer)
{
    public IReadOnlyList<int> EndIds { get; init; } = [];
}

/// <summary>The tokenised training and evaluation data of one run.</summary>
internal sealed record TrainingData(
    IReadOnlyList<TokenSequence> Train, DataStats TrainStats,
    IReadOnlyList<TokenSequence> Eval, IReadOnlyList<PromptAnswer> EvalPrompts, DataStats? EvalStats)
{
    /// <summary>
    /// Reads the training file and the evaluation data: an eval file when given, otherwise a seeded random
    /// <paramref name="evalSplit"/> fraction of the training examples (none when 0). Eval examples are never packed;
    /// those with a prompt and completion also feed exact-match accuracy.
    /// </summary>
    /// <paramref name="chat"/> renders {"messages"} examples (the model's chat template; the simple format when null).
    public static TrainingData Load(string trainPath, TextTokenizer tokenizer, int maxLength, bool packing,
        string? evalPath = null, double evalSplit = 0, ulong seed = 0, Chat.ChatPrompter? chat = null)
    {
        if (evalSplit is < 0 or >= 1) throw new ArgumentException($"eval split {evalSplit} must be in [0, 1)");
        var train = DatasetReader.Read(trainPath, chat);
        IReadOnlyList<RawExample> eval = [];
        if (evalPath is not null) eval = DatasetReader.Read(evalPath, chat);
        else if (evalSplit > 0)
        {
            var shuffled = Shuffled(train, seed);
            int n = (int)Math.Round(train.Count * evalSplit);
            if (n == 0 || n == train.Count)
                throw new InvalidDataException($"{trainPath}: eval split {evalSplit} of {train.Count} examples leaves {(n == 0 ? "no eval" : "no training")} examples");
            eval = shuffled.Take(n).ToList();
            train = shuffled.Skip(n).ToList();
        }
        var (trainSeqs, trainStats) = SequenceBuilder.Build(train, tokenizer, maxLength, packing);
        if (trainSeqs.Count == 0) throw new InvalidDataException($"{trainPath}: no example has tokens to learn from ({trainStats})");
        WarnIfMostlyUnknown(trainPath, trainSeqs, tokenizer);
        if (eval.Count == 0) return new TrainingData(trainSeqs, trainStats, [], [], null);
        var (evalSeqs, evalStats) = SequenceBuilder.Build(eval, tokenizer, maxLength, packing: false);
        var prompts = eval.Where(e => e.PromptAndAnswer is not null)
            .Select(e => EvalPromptAnswer(e, tokenizer))
            .Where(p => p.Prompt.Length > 0 && p.Prompt.Length + p.Answer.Length < maxLength)
            .ToList();
        return new TrainingData(trainSeqs, trainStats, evalSeqs, prompts, evalStats);
    }

    /// <summary><see cref="Load(string, TextTokenizer, int, bool, string?, double, ulong, Chat.ChatPrompter?)"/> with a run's options.</summary>
    public static TrainingData Load(string trainPath, TextTokenizer tokenizer, Training.TrainerOptions o, Chat.ChatPrompter? chat = null) =>
        Load(trainPath, tokenizer, o.MaxSeqLength, o.Packing, o.EvalFile, o.EvalSplit, o.Seed, chat);

    /// <summary>
    /// An eval example's prompt and answer for exact match. The prompt is encoded as generation encodes one: a rendered
    /// conversation (everything up to its last assistant reply) as it is, a plain prompt as HF's tokenizer(prompt)
    /// (the tokenizer's leading special tokens, then the text). The answer is the last reply's or the completion's ids
    /// exactly as training learns them (the example encoded whole), without the closing special tokens; the first of
    /// those (a template's end-of-turn marker, on which generation stops) is the answer's end id. Encoding the answer
    /// on its own gave a SentencePiece tokenizer's "▁" prefix ("Paris&lt;/s&gt;" as "▁Paris" where the reply after
    /// "&lt;|assistant|&gt;\n" is "Par", "is"), so exact match could never hit on Zephyr, Llama-2 or Mistral chats.
    /// </summary>
    static PromptAnswer EvalPromptAnswer(RawExample e, TextTokenizer tokenizer)
    {
        var seq = SequenceBuilder.Tokenize(e, tokenizer, eos: null);
        int end = seq.Length;   // the last learned run (earlier replies of a multi-turn chat are prompt; the newline after it is not)
        while (end > 0 && seq.Labels[end - 1] == TokenSequence.Ignore) end--;
        int start = end;
        while (start > 0 && seq.Labels[start - 1] != TokenSequence.Ignore) start--;
        var special = tokenizer.SpecialTokens.Values.ToHashSet();
        int keep = end;
        while (e.Rendered && keep > start && special.Contains(seq.Ids[keep - 1])) keep--;
        string prompt = e.PromptAndAnswer!.Value.Prompt;
        int[] promptIds = e.Rendered ? tokenizer.Encode(prompt) : [.. tokenizer.Prefix, .. tokenizer.Encode(prompt)];
        return new PromptAnswer(promptIds, seq.Ids[start..keep]) { EndIds = keep < end ? [seq.Ids[keep]] : [] };
    }

    /// <summary>Text the tokenizer cannot spell (another language or encoding, a binary or CSV file) trains the model to say &lt;unk&gt;.</summary>
    static void WarnIfMostlyUnknown(string path, IReadOnlyList<TokenSequence> seqs, TextTokenizer tokenizer)
    {
        if (tokenizer.UnkId is not int unk) return;
        long total = seqs.Sum(s => (long)s.Length), unknown = seqs.Sum(s => (long)s.Ids.Count(id => id == unk));
        if (unknown * 2 > total)
            PeftLogging.Warn($"{path}: {unknown:N0} of {total:N0} tokens ({100.0 * unknown / total:F0}%) are unknown (<unk>) to the tokenizer {tokenizer.Path}; is the data in the model's language and a text format it was trained on?");
    }

    static List<RawExample> Shuffled(IReadOnlyList<RawExample> xs, ulong seed)
    {
        var list = xs.ToList();
        new SplitMix64(seed ^ 0xD1B54A32D192ED03UL).Shuffle(list);
        return list;
    }
}
