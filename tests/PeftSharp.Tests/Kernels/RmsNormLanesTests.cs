using System.Runtime.Intrinsics;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Kernels;

/// <summary>
/// Both widths of the RMSNorm kernel's one body, whatever the CPU: the 16-lane instantiation's fp32 rows use only
/// cross-platform Vector512 calls, so on a CPU without AVX-512 .NET runs them in software. This checks the 16-lane
/// copy (what an AVX-512 machine runs: its 32-wide step, its 16-wide step, the scalar tail) on this AVX2 box too.
/// </summary>
public unsafe class RmsNormLanesTests
{
    /// <summary>float64 RMSNorm of each row: y, rstd, dx and dw (summed over rows), as the kernel defines them.</summary>
    static (double[] Y, double[] Rstd, double[] Dx, double[] Dw) Reference(float[] x, float[] w, float[] g, int rows, int n, double eps)
    {
        var (y, rstd, dx, dw) = (new double[x.Length], new double[rows], new double[x.Length], new double[n]);
        for (int r = 0; r < rows; r++)
        {
            double ss = 0, dot = 0;
            for (int j = 0; j < n; j++) { ss += (double)x[r * n + j] * x[r * n + j]; dot += (double)g[r * n + j] * w[j] * x[r * n + j]; }
            double s = 1 / Math.Sqrt(ss / n + eps), k = s * s * s * dot / n;
            rstd[r] = s;
            for (int j = 0; j < n; j++)
            {
                int i = r * n + j;
                y[i] = x[i] * s * w[j];
                dx[i] = s * g[i] * w[j] - k * x[i];
                dw[j] += g[i] * x[i] * s;
            }
        }
        return (y, rstd, dx, dw);
    }

    static void Near(double[] expected, float[] actual, double tol, string what)
    {
        double err = 0;
        for (int i = 0; i < expected.Length; i++) err = Math.Max(err, Math.Abs(expected[i] - actual[i]));
        Assert.True(err <= tol, $"{what}: max abs error {err} > {tol}");
    }

    [Theory]
    [InlineData(16, 20, 48)]   // a 32-wide step and a 16-wide step (16 lanes); six 8-wide vectors (8 lanes)
    [InlineData(16, 3, 7)]     // narrower than one vector: the scalar tail alone
    [InlineData(16, 40, 517)]  // 16 x 32 + 5: steps and a tail; several row blocks
    [InlineData(8, 40, 517)]
    [InlineData(8, 5, 13)]     // 8 + 5
    public void EachWidthMatchesFloat64(int lanes, int rows, int n)
    {
        if (lanes == 8 && !ElementKernelRunsAt8()) return;
        var rng = new Random(lanes * 1000 + n);
        float[] Rand(int count, double scale, double shift = 0) => Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale + shift)).ToArray();
        float[] x = Rand(rows * n, 3), w = Rand(n, 0.5, 1), g = Rand(rows * n, 1);
        float[] y = new float[x.Length], rstd = new float[rows], dx = new float[x.Length], dw = new float[n];
        fixed (float* xp = x, wp = w, gp = g, yp = y, rp = rstd, dxp = dx, dwp = dw)
        {
            if (lanes == 16)
            {
                RmsNormKernel.Forward<F32, Lanes16, Vector512<float>>((F32*)xp, wp, (F32*)yp, rp, rows, n, 1e-6f, roundNormed: false, threads: 1);
                RmsNormKernel.Backward<F32, Lanes16, Vector512<float>>((F32*)xp, wp, rp, (F32*)gp, (F32*)dxp, dwp, rows, n, threads: 1);
            }
            else
            {
                RmsNormKernel.Forward<F32, Lanes8, Vector256<float>>((F32*)xp, wp, (F32*)yp, rp, rows, n, 1e-6f, roundNormed: false, threads: 1);
                RmsNormKernel.Backward<F32, Lanes8, Vector256<float>>((F32*)xp, wp, rp, (F32*)gp, (F32*)dxp, dwp, rows, n, threads: 1);
            }
        }
        var (ry, rr, rdx, rdw) = Reference(x, w, g, rows, n, 1e-6);
        Near(ry, y, 1e-5, "y");
        Near(rr, rstd, 1e-5 * rr.Max(), "rstd");
        Near(rdx, dx, 1e-4, "dx");
        Near(rdw, dw, 1e-5 * Math.Max(1, rdw.Max(Math.Abs)), "dw");
    }

    /// <summary>The 8-lane copy needs AVX2 + FMA (Fma.MultiplyAdd has no software fallback).</summary>
    static bool ElementKernelRunsAt8() => System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported;
}
