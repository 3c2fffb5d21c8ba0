using PeftSharp.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Tests.Training.Optim;

public class AdamW8bitTests
{
    /// <summary>create_dynamic_map written out in double: linspace(0.1, 1, k) midpoints times 10^(i-6).</summary>
    static double[] ReferenceMap(bool signed)
    {
        var data = new List<double> { 0, 1 };
        for (int i = 0; i < 7; i++)
        {
            int items = signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
            for (int k = 0; k < items - 1; k++)
            {
                double a = 0.1 + 0.9 * k / (items - 1), b = 0.1 + 0.9 * (k + 1) / (items - 1);
                double v = Math.Pow(10, i - 6) * (a + b) / 2;
                data.Add(v);
                if (signed) data.Add(-v);
            }
        }
        data.Sort();
        return data.ToArray();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void DynamicMapMatchesBitsandbytesConstruction(bool signed)
    {
        var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
        var reference = ReferenceMap(signed);
        Assert.Equal(256, map.Values.Length);
        for (int i = 0; i < 256; i++)
            Assert.True(Math.Abs(map.Values[i] - reference[i]) <= 1e-6 * Math.Abs(reference[i]) + 1e-12, $"code {i}: {map.Values[i]} vs {reference[i]}");
        Assert.Equal(1f, map.Values[255]);
        if (signed)
        {
            Assert.Equal(0f, map.Values[127]);
            Assert.Equal(5.5e-7, map.Values[128], 1e-12);
            Assert.Equal(-(1 - 0.45 / 64), map.Values[0], 1e-6);
        }
        else
        {
            Assert.Equal(0f, map.Values[0]);
            Assert.Equal(3.25e-7, map.Values[1], 1e-12);
            Assert.Equal(1 - 0.45 / 128, map.Values[254], 1e-6);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QuantizeRoundsToTheNearestCode(bool signed)
    {
        var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
        var rng = new Random(3);
        var xs = new List<float>(map.Values);
        for (int i = 0; i < 255; i++) xs.Add((map.Values[i] + map.Values[i + 1]) / 2); // midpoints
        for (int i = 0; i < 20000; i++)
        {
            float x = (float)Math.Pow(10, -9 * rng.NextDouble());
            xs.Add(signed && rng.Next(2) == 0 ? -x : x);
        }
        xs.AddRange([0f, 1f, 1e-30f, 2f]);
        foreach (float x in xs)
        {
            int q = map.Quantize(x);
            double best = map.Values.Min(v => Math.Abs((double)v - x));
            Assert.True(Math.Abs((double)map.Values[q] - x) <= best + 1e-6 * Math.Abs(x), $"{x} -> code {q} ({map.Values[q]}), nearest is {best} away");
        }
    }

    /// <summary>
    /// The vector kernel's search-free rounding (one rule per 16-bit bucket) equals the map's search for every float
    /// that can matter: both ends of every bucket, each midpoint and its neighbouring floats, and random floats in
    /// every bucket, positive and negative, NaN and infinities included.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QuantizeByRuleEqualsTheSearchForEveryBucket(bool signed)
    {
        var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
        var rng = new Random(11);
        var bits = new List<uint>();
        for (uint p = 0; p < 65536; p++)
        {
            bits.Add(p << 16);
            bits.Add(p << 16 | 0xFFFF);
            for (int r = 0; r < 8; r++) bits.Add(p << 16 | (uint)rng.Next(65536));
        }
        foreach (float mid in map.Midpoints)
        {
            uint b = BitConverter.SingleToUInt32Bits(mid);
            for (uint d = 0; d < 3; d++) { bits.Add(b + d); bits.Add(b - d); }
        }
        int checkedNearMidpoints = 0;
        foreach (uint b in bits)
        {
            float x = BitConverter.UInt32BitsToSingle(b);
            byte expected = map.Quantize(x), actual = map.QuantizeByRule(x);
            if (expected != actual) Assert.Fail($"bits {b:X8} ({x}): rule gives {actual}, search {expected}");
            if (Math.Abs(x) <= 1 && expected != map.Quantize(BitConverter.UInt32BitsToSingle(b ^ 1))) checkedNearMidpoints++;
        }
        Assert.True(checkedNearMidpoints >= 255, $"only {checkedNearMidpoints} floats sat next to a code boundary");
    }

    [Fact]
    public void KernelMatchesANaiveBlockwiseReference()
    {
        const int n = 1000; // three full blocks and a partial one
        var o = new AdamWOptions(2e-3, 0.9, 0.99, 1e-6, 0.05);
        const long step = 4;
        var rng = new Random(7);
        float[] p0 = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] g = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray();
        byte[] cm0 = Enumerable.Range(0, n).Select(_ => (byte)rng.Next(256)).ToArray();
        byte[] cv0 = Enumerable.Range(0, n).Select(_ => (byte)rng.Next(256)).ToArray();
        float[] am0 = [0.02f, 0.03f, 0f, 0.01f], av0 = [1e-4f, 2e-4f, 0f, 5e-5f];

        using var p = tensor(p0);
        using var gt = tensor(g);
        using var cm = tensor(cm0);
        using var cv = tensor(cv0);
        using var am = tensor(am0);
        using var av = tensor(av0);
        Blockwise8bitAdamKernel.Step(p, gt, cm, am, cv, av, step, o.LearningRate, o);

        var sm = DynamicMap.Signed.Values;
        var um = DynamicMap.Unsigned.Values;
        double bc1 = 1 - Math.Pow(o.Beta1, step), bc2 = 1 - Math.Pow(o.Beta2, step);
        var pAfter = p.data<float>().ToArray();
        var cmAfter = cm.data<byte>().ToArray();
        var cvAfter = cv.data<byte>().ToArray();
        var amAfter = am.data<float>().ToArray();
        int codeMismatches = 0;
        for (int b = 0; b < 4; b++)
        {
            int s = b * 256, e = Math.Min(n, s + 256);
            var m = new double[e - s];
            var v = new double[e - s];
            for (int i = s; i < e; i++)
            {
                m[i - s] = o.Beta1 * sm[cm0[i]] * am0[b] + (1 - o.Beta1) * g[i];
                v[i - s] = o.Beta2 * um[cv0[i]] * av0[b] + (1 - o.Beta2) * g[i] * (double)g[i];
                double expected = p0[i] * (1 - o.LearningRate * o.WeightDecay)
                                  - o.LearningRate / bc1 * m[i - s] / (Math.Sqrt(v[i - s] / bc2) + o.Eps);
                Assert.True(Math.Abs(pAfter[i] - expected) < 1e-6, $"param {i}: {pAfter[i]} vs {expected}");
            }
            double maxM = m.Max(Math.Abs);
            Assert.Equal(maxM, amAfter[b], maxM * 1e-6);
            for (int i = s; i < e; i++)
            {
                int nearestM = Enumerable.Range(0, 256).MinBy(k => Math.Abs(sm[k] - m[i - s] / maxM));
                int nearestV = Enumerable.Range(0, 256).MinBy(k => Math.Abs(um[k] - v[i - s] / v.Max()));
                if (cmAfter[i] != nearestM) { codeMismatches++; Assert.True(Math.Abs(cmAfter[i] - nearestM) == 1); }
                if (cvAfter[i] != nearestV) { codeMismatches++; Assert.True(Math.Abs(cvAfter[i] - nearestV) == 1); }
            }
        }
        Assert.True(codeMismatches <= 4, $"{codeMismatches} codes differ from the nearest (only float ties may)");
    }

    [Fact]
    public void TrajectoryStaysCloseToFp32AdamW()
    {
        using var problem = new RegressionProblem();
        var eightBit = problem.CloneParameters();
        var start = problem.CloneParameters();
        var o = new AdamWOptions(5e-3, WeightDecay: 0.01);
        using var fp32 = new AdamW(problem.Parameters, o);
        using var q = new AdamW8bit(eightBit, o);
        double initial = problem.Loss(problem.Parameters);
        problem.Train(fp32, problem.Parameters, 50);
        problem.Train(q, eightBit, 50);
        double lossFp32 = problem.Loss(problem.Parameters), loss8 = problem.Loss(eightBit);

        Assert.True(lossFp32 < 0.5 * initial, $"fp32 loss {initial} -> {lossFp32}");
        Assert.True(Math.Abs(loss8 - lossFp32) < 0.05 * lossFp32, $"8-bit loss {loss8} vs fp32 {lossFp32}");
        // Compare the distance travelled, not the parameters (which are dominated by their start).
        using var moved8 = eightBit[0].Param - start[0].Param;
        using var moved32 = problem.Parameters[0].Param - start[0].Param;
        double err = TestPaths.RelativeError(moved8, moved32);
        Assert.True(err < 0.1, $"8-bit w1 update relative error {err}");
        // The small tensors use the fp32 path, but see the 8-bit-quantised w1 through the loss: close, not equal.
        Assert.True(TestPaths.RelativeError(eightBit[2].Param, problem.Parameters[2].Param) < 0.02);
    }

    [Fact]
    public void StateIsTwoBytesPerElementPlusBlockScalesForLargeTensors()
    {
        using var problem = new RegressionProblem();
        using var opt = new AdamW8bit(problem.Parameters);
        long w1 = 96 * 128, blocks = w1 / 256, small = 96 + 16 * 96;
        Assert.Equal(2 * w1 + 2 * 4 * blocks + 8 * small, opt.StateBytes);
    }

    [Fact]
    public void TorchOpsPathMatchesTheFusedKernel()
    {
        const int n = 5000; // 19 full blocks and a partial one
        var o = new AdamWOptions(3e-3, 0.9, 0.995, 1e-7, 0.02);
        var gen = new Generator(11);
        using var p0 = randn(n, generator: gen);
        using var pa = p0.clone();
        using var pb = p0.clone();
        var stateA = new[] { zeros(n, ScalarType.Byte), zeros(20), zeros(n, ScalarType.Byte), zeros(20) };
        var stateB = stateA.Select(t => t.clone()).ToArray();
        for (long step = 1; step <= 5; step++)
        {
            using var g = randn(n, generator: gen).Times(0.1);
            if (step == 1) g.narrow(0, 256, 256).zero_(); // an all-zero block
            Blockwise8bitAdamKernel.Step(pa, g, stateA[0], stateA[1], stateA[2], stateA[3], step, o.LearningRate, o);
            Blockwise8bitAdamTorch.Step(pb, g, stateB[0], stateB[1], stateB[2], stateB[3], step, o.LearningRate, o);
        }
        Assert.True(TestPaths.MaxAbsError(pa, pb) < 1e-6, $"params differ by {TestPaths.MaxAbsError(pa, pb)}");
        Assert.True(TestPaths.RelativeError(stateB[1], stateA[1]) < 1e-5);
        Assert.True(TestPaths.RelativeError(stateB[3], stateA[3]) < 1e-5);
        foreach (int k in new[] { 0, 2 })
        {
            using var diff = (stateA[k].to_type(ScalarType.Int32) - stateB[k].to_type(ScalarType.Int32)).abs();
            Assert.True(diff.max().item<int>() <= 1);
            Assert.True(diff.sum().item<long>() < n / 100, $"{diff.sum().item<long>()} codes differ");
        }
        Assert.True(TestPaths.MaxAbsError(pa, p0) > 1e-3); // they moved
        foreach (var t in stateA.Concat(stateB)) t.Dispose();
    }

    [Fact]
    public void SixteenBitParametersTakeTheTorchOpsPath()
    {
        using var problem = new RegressionProblem();
        var w = new TorchSharp.Modules.Parameter(problem.Parameters[0].Param.detach().to_type(ScalarType.BFloat16));
        using var opt = new AdamW8bit([("w", w)], new AdamWOptions(1e-2));
        using var before = w.detach().clone();
        w.grad = ones_like(w);
        opt.Step();
        // Sign descent on the first step: every element moves by about lr against the gradient.
        using var moved = (before.to_type(ScalarType.Float32) - w.detach().to_type(ScalarType.Float32)).mean();
        Assert.Equal(1e-2, moved.item<float>(), 2e-3);
    }
}
