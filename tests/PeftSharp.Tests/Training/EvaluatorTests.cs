using PeftSharp.Data;
using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

public class EvaluatorTests
{
    [Fact]
    public void ExactMatchNeedsTheAnswerThenEos()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        int[] prompt = [72, 101, 108, 108, 111];
        var greedy = TextGenerator.Generate(model, prompt, new SamplingOptions { MaxNewTokens = 4 }, []).ToArray();
        // Call the 4th greedy token "EOS": then the first three are exactly the model's answer.
        int eos = greedy[3];
        Assert.DoesNotContain(eos, greedy[..3]); // the construction needs a 4th token not repeated earlier
        var right = new PromptAnswer(prompt, greedy[..3]);
        var wrong = new PromptAnswer(prompt, [greedy[0], greedy[1], (greedy[2] + 1) % 256]);
        var shortAnswer = new PromptAnswer(prompt, greedy[..2]); // the model goes on instead of stopping
        var r = Evaluator.Run(model, [], [right, wrong, shortAnswer], eos, batchSize: 2);
        Assert.Equal(1.0 / 3, r.ExactMatch!.Value, 12);
        Assert.Equal(3, r.Examples);
    }

    [Fact]
    public void EvalLossIsTheMeanOverLossTokensAcrossBatches()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var seqs = new List<TokenSequence>
        {
            new([1, 2, 3, 4], [-100, -100, 3, 4]),
            new([5, 6, 7], [-100, 6, 7]),
            new([8, 9], [8, 9]),
        };
        var r = Evaluator.Run(model, seqs, [], null, batchSize: 2);
        Assert.Null(r.ExactMatch);
        double sum = 0;
        int n = 0;
        using (no_grad())
            foreach (var s in seqs)
            {
                using var scope = NewDisposeScope();
                var logp = model.Forward(tensor(s.Ids.Select(i => (long)i).ToArray(), [1, s.Length])).to_type(ScalarType.Float64).log_softmax(-1);
                for (int t = 1; t < s.Length; t++)
                    if (s.Labels[t] != TokenSequence.Ignore) { sum -= logp[0, t - 1, s.Labels[t]].item<double>(); n++; }
            }
        Assert.Equal(5, n);
        Assert.Equal(sum / n, r.Loss, 4);
    }
}
