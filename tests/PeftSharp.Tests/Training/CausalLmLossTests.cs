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
}
