using PeftSharp.Training.Preference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>The DPO/ORPO losses and their gradients against the formulas worked out by hand in float64.</summary>
public class PreferenceLossTests
{
    const int B = 2, T = 5, V = 6;
    // Rows 0..B-1 are chosen, B..2B-1 rejected; -100 marks the prompt (and padding).
    static readonly long[] Labels = [-100, -100, 3, 1, 0, -100, 2, 5, 0, -100, -100, -100, 4, 0, -100, -100, 1, 1, 2, 0];
    static readonly double[] RefChosen = [-3.1, -2.4], RefRejected = [-2.9, -3.3];

    static Tensor Logits()
    {
        var g = new Generator(5);
        return randn([2 * B, T, V], ScalarType.Float64, generator: g).requires_grad_(true);
    }

    static double[] Row(double[] flat, int b, int t) => Enumerable.Range(0, V).Select(v => flat[(b * T + t) * V + v]).ToArray();
    static double LogSoftmax(double[] row, int k) { double m = row.Max(); return row[k] - m - Math.Log(row.Sum(x => Math.Exp(x - m))); }
    static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    /// <summary>Per sequence: the summed (or averaged) log-prob of its labelled next tokens, and the token count.</summary>
    static (double Logp, int Count)[] HandLogps(double[] flat, bool average)
    {
        var r = new (double, int)[2 * B];
        for (int b = 0; b < 2 * B; b++)
        {
            double s = 0; int n = 0;
            for (int t = 0; t < T - 1; t++)
            {
                long y = Labels[b * T + t + 1];
                if (y == -100) continue;
                s += LogSoftmax(Row(flat, b, t), (int)y); n++;
            }
            r[b] = (average ? s / n : s, n);
        }
        return r;
    }

    /// <summary>d loss / d logits from d loss / d logp_b: (onehot(y) − softmax) on each labelled position, / n when averaged.</summary>
    static double[] HandLogitGrad(double[] flat, double[] dLogp, bool average)
    {
        var lp = HandLogps(flat, average);
        var g = new double[flat.Length];
        for (int b = 0; b < 2 * B; b++)
            for (int t = 0; t < T - 1; t++)
            {
                long y = Labels[b * T + t + 1];
                if (y == -100) continue;
                var row = Row(flat, b, t);
                double m = row.Max(), z = row.Sum(x => Math.Exp(x - m));
                for (int v = 0; v < V; v++)
                    g[(b * T + t) * V + v] = dLogp[b] * ((v == y ? 1 : 0) - Math.Exp(row[v] - m) / z) / (average ? lp[b].Count : 1);
            }
        return g;
    }

    [Theory]
    [InlineData(0.1, 0.0)]
    [InlineData(0.5, 0.2)]
    public void DpoSigmoidLossRewardsAndGradientMatchHandComputed(double beta, double smoothing)
    {
        using var logits = Logits();
        using var labels = tensor(Labels, [2 * B, T]);
        using var logps = PreferenceLoss.SequenceLogps(logits, labels);
        using var refC = tensor(RefChosen);
        using var refR = tensor(RefRejected);
        using var r = PreferenceLoss.Dpo(logps.narrow(0, 0, B), logps.narrow(0, B, B), refC, refR, beta, smoothing);
        using var loss = r.Losses.mean();
        loss.backward();

        var flat = logits.detach().data<double>().ToArray();
        var lp = HandLogps(flat, average: false);
        double expected = 0;
        var dLogp = new double[2 * B];
        for (int i = 0; i < B; i++)
        {
            double z = (lp[i].Logp - lp[B + i].Logp) - (RefChosen[i] - RefRejected[i]);
            expected += (-(1 - smoothing) * Math.Log(Sigmoid(beta * z)) - smoothing * Math.Log(Sigmoid(-beta * z))) / B;
            // d/dz of the per-pair loss, then dz/dlogp_c = 1, dz/dlogp_r = -1; the mean divides by B.
            double dz = (-(1 - smoothing) * beta * Sigmoid(-beta * z) + smoothing * beta * Sigmoid(beta * z)) / B;
            dLogp[i] = dz; dLogp[B + i] = -dz;
            Assert.Equal(beta * (lp[i].Logp - RefChosen[i]), r.ChosenRewards[i].item<double>(), 12);
            Assert.Equal(beta * (lp[B + i].Logp - RefRejected[i]), r.RejectedRewards[i].item<double>(), 12);
        }
        Assert.Equal(expected, loss.item<double>(), 12);
        var grad = logits.grad!.data<double>().ToArray();
        var hand = HandLogitGrad(flat, dLogp, average: false);
        for (int k = 0; k < grad.Length; k++) Assert.Equal(hand[k], grad[k], 12);
    }

    [Fact]
    public void IpoUsesLengthAveragedLogpsAndTheSquaredLoss()
    {
        const double beta = 0.1;
        using var logits = Logits();
        using var labels = tensor(Labels, [2 * B, T]);
        using var logps = PreferenceLoss.SequenceLogps(logits, labels, average: true);
        using var refC = tensor(RefChosen);
        using var refR = tensor(RefRejected);
        using var r = PreferenceLoss.Dpo(logps.narrow(0, 0, B), logps.narrow(0, B, B), refC, refR, beta, 0, DpoLossType.Ipo);
        using var loss = r.Losses.mean();
        loss.backward();

        var flat = logits.detach().data<double>().ToArray();
        var lp = HandLogps(flat, average: true);
        double expected = 0;
        var dLogp = new double[2 * B];
        for (int i = 0; i < B; i++)
        {
            double z = (lp[i].Logp - lp[B + i].Logp) - (RefChosen[i] - RefRejected[i]);
            expected += Math.Pow(z - 1 / (2 * beta), 2) / B;
            double dz = 2 * (z - 1 / (2 * beta)) / B;
            dLogp[i] = dz; dLogp[B + i] = -dz;
        }
        Assert.Equal(expected, loss.item<double>(), 10);
        var grad = logits.grad!.data<double>().ToArray();
        var hand = HandLogitGrad(flat, dLogp, average: true);
        for (int k = 0; k < grad.Length; k++) Assert.Equal(hand[k], grad[k], 10);
    }

    [Fact]
    public void OrpoOddsRatioTermMatchesHandComputed()
    {
        const double beta = 0.25;
        using var logits = Logits();
        using var labels = tensor(Labels, [2 * B, T]);
        using var logps = PreferenceLoss.SequenceLogps(logits, labels, average: true);
        var (r, ratio, logOdds) = PreferenceLoss.Orpo(logps.narrow(0, 0, B), logps.narrow(0, B, B), beta);
        using var _ = r;
        using var __ = ratio;
        using var ___ = logOdds;
        using var loss = r.Losses.mean();
        loss.backward();

        var flat = logits.detach().data<double>().ToArray();
        var lp = HandLogps(flat, average: true);
        double expected = 0;
        var dLogp = new double[2 * B];
        for (int i = 0; i < B; i++)
        {
            double c = lp[i].Logp, rj = lp[B + i].Logp;
            // log odds(y) = log p − log(1 − p) with p = e^logp; the ratio's log is their difference.
            double lo = (c - Math.Log(1 - Math.Exp(c))) - (rj - Math.Log(1 - Math.Exp(rj)));
            expected += -beta * Math.Log(Sigmoid(lo)) / B;
            Assert.Equal(lo, logOdds[i].item<double>(), 12);
            Assert.Equal(Math.Log(Sigmoid(lo)), ratio[i].item<double>(), 12);
            Assert.Equal(beta * c, r.ChosenRewards[i].item<double>(), 12);
            // d(−β log σ(L))/dL = −β σ(−L); dL/dc = 1/(1 − e^c); dL/dr = −1/(1 − e^r).
            double dl = -beta * Sigmoid(-lo) / B;
            dLogp[i] = dl / (1 - Math.Exp(c));
            dLogp[B + i] = -dl / (1 - Math.Exp(rj));
        }
        Assert.Equal(expected, loss.item<double>(), 12);
        var grad = logits.grad!.data<double>().ToArray();
        var hand = HandLogitGrad(flat, dLogp, average: true);
        for (int k = 0; k < grad.Length; k++) Assert.Equal(hand[k], grad[k], 12);
    }

    [Fact]
    public void Log1mExpIsAccurateNearZeroAndFarFromIt()
    {
        using var x = tensor(new[] { -1e-5, -0.3, -0.7, -5.0, -40.0, 0.0 });
        using var y = PreferenceLoss.Log1mExp(x);
        var got = y.data<double>().ToArray();
        double expm1 = -1e-5 + 1e-10 / 2 - 1e-15 / 6;   // the series of e^x − 1; 1 − e^x in doubles would lose digits here
        Assert.Equal(Math.Log(-expm1), got[0], 12);
        Assert.Equal(Math.Log(1 - Math.Exp(-0.3)), got[1], 12);
        Assert.Equal(Math.Log(1 - Math.Exp(-0.7)), got[2], 12);
        Assert.Equal(Math.Log(1 - Math.Exp(-5.0)), got[3], 12);
        Assert.Equal(1.0, got[4] / -Math.Exp(-40.0), 12);   // relative: the value is about -4e-18
        Assert.True(double.IsFinite(got[5]), "an average log-prob of exactly 0 must not give -inf");
    }
}
