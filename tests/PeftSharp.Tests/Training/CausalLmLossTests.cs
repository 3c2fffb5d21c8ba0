using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

public class CausalLmLossTests
{
    [Fact]
    public void MatchesNaiveShiftedMaskedCrossEntropy()
    {
        random.manual_seed(3);
        using var logits = randn(2, 5, 7);
        long[] labels = [-100, 3, 1, -100, 6, -100, -100, 0, 2, 5];
        using var lab = tensor(labels, [2, 5]);
        using var loss = CausalLmLoss.Sum(logits, lab);

        var l = logits.to_type(ScalarType.Float64).data<double>().ToArray();
        double expected = 0;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 4; t++)
            {
                long target = labels[b * 5 + t + 1];
                if (target == -100) continue;
                var row = Enumerable.Range(0, 7).Select(v => l[(b * 5 + t) * 7 + v]).ToArray();
                double max = row.Max(), lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
                expected += lse - row[target];
            }
        Assert.Equal(expected, loss.item<float>(), 4);
    }

    [Fact]
    public void GradientEqualsTheNarrowedLogitsForm()
    {
        // The labels shift instead of the logits: the last position must get exactly zero gradient and the others
        // the gradient of the textbook form (narrow to T-1, flatten, cross entropy).
        using var scope = NewDisposeScope();
        random.manual_seed(4);
        var logits = randn(3, 6, 11).requires_grad_(true);
        var reference = logits.detach().clone().requires_grad_(true);
        var labels = randint(0, 11, [3, 6]);
        labels[1, 3] = tensor(-100L);
        var loss = CausalLmLoss.Sum(logits, labels);
        loss.backward();
        var expected = nn.functional.cross_entropy(reference.narrow(1, 0, 5).reshape(-1, 11), labels.narrow(1, 1, 5).reshape(-1),
            ignore_index: -100, reduction: nn.Reduction.Sum);
        expected.backward();
        Assert.Equal(expected.item<float>(), loss.item<float>(), 5);
        Assert.True(logits.grad!.narrow(1, 5, 1).abs().max().item<float>() == 0);
        Assert.True((logits.grad! - reference.grad!).abs().max().item<float>() <= 1e-7);
    }
}
