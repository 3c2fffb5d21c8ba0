using System.Buffers.Binary;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// ggml's k-quant reference encoders (ggml/src/ggml-quants.c quantize_row_q4_K_ref, quantize_row_q6_K_ref), bit for
/// bit: llama-quantize calls exactly these when no importance matrix is given. Every operation is single precision in
/// C's evaluation order (libggml-base is built without FMA contraction: its disassembly has no vfmadd), rounding is
/// ggml's nearest_int (the 1.5*2^23 trick: round half to even), and scales go through fp16 as ggml stores them.
/// </summary>
internal static class GgmlKQuants
{
    /// <summary>QK_K: values per super-block.</summary>
    public const int QK_K = 256;
    public const int Q4_KBytes = 144; // fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles
    public const int Q6_KBytes = 210; // 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, fp16 d
    const float GroupMaxEps = 1e-15f;

    /// <summary>ggml's nearest_int: adds 1.5*2^23 so the float adder rounds (half to even), then reads the mantissa.</summary>
    internal static int NearestInt(float f)
    {
        float v = f + 12582912f;
        return (BitConverter.SingleToInt32Bits(v) & 0x007fffff) - 0x00400000;
    }

        /// <summary>quantize_row_q4_K_ref: 8 sub-blocks of 32 at levels 0..15, each with a 6-bit scale and min under fp16 d and dmin.</summary>
    public static void QuantizeQ4_K(ReadOnlySpan<float> x, Span<byte> dst)
    {
        if (x.Length % QK_K != 0) throw new ArgumentException($"q4_K needs a multiple of {QK_K} values, got {x.Length}");
        Span<byte> L = stackalloc byte[QK_K];
        for (int i = 0; i < x.Length / QK_K; i++)
        {
            var y = dst.Slice(i * Q4_KBytes, Q4_KBytes);
            ScaledMinLevels(x.Slice(i * QK_K, QK_K), y, L, nmax: 15, rmin: -1f, nstep: 20);
            var q = y.Slice(16, 128);
            for (int j = 0, o = 0; j < QK_K; j += 64, o += 32)
                for (int l = 0; l < 32; l++) q[o + l] = (byte)(L[j + l] | (L[j + l + 32] << 4));
        }
    }

    /// <summary>
    /// The q4_K scales (the reference shares this with q5_K): per sub-block of 32 a scale and min by make_qkx2_quants (weights rms + |x|), both
    /// quantised to 6 bits against the block's largest (d, dmin written as fp16 into y[0..4), the packed 6-bit values
    /// into y[4..16)), then every value re-quantised against the stored scales into <paramref name="L"/>.
    /// </summary>
    static void ScaledMinLevels(ReadOnlySpan<float> xb, Span<byte> y, Span<byte> L, int nmax, float rmin, int nstep)
    {
        Span<byte> laux = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> mins = stackalloc float[QK_K / 32];
        Span<float> scales = stackalloc float[QK_K / 32];
        y.Clear();
        var sc = y.Slice(4, 12);
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < QK_K / 32; j++)
        {
            var xs = xb.Slice(32 * j, 32);
            float sumX2 = 0;
            for (int l = 0; l < 32; l++) sumX2 += xs[l] * xs[l];
            float avX = MathF.Sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++) weights[l] = avX + MathF.Abs(xs[l]);
            scales[j] = MakeQkx2Quants(32, nmax, xs, weights, L.Slice(32 * j, 32), out mins[j], laux, rmin, 0.1f, nstep);
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        float invScale = maxScale > 0 ? 63f / maxScale : 0f;
        float invMin = maxMin > 0 ? 63f / maxMin : 0f;
        for (int j = 0; j < QK_K / 32; j++)
        {
            byte ls = Math.Min((byte)63, unchecked((byte)NearestInt(invScale * scales[j])));
            byte lm = Math.Min((byte)63, unchecked((byte)NearestInt(invMin * mins[j])));
            if (j < 4) { sc[j] = ls; sc[j + 4] = lm; }
            else
            {
                sc[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                sc[j - 4] |= (byte)((ls >> 4) << 6);
                sc[j] |= (byte)((lm >> 4) << 6);
            }
        }
        BinaryPrimitives.WriteHalfLittleEndian(y, (Half)(maxScale / 63f));
        BinaryPrimitives.WriteHalfLittleEndian(y.Slice(2), (Half)(maxMin / 63f));
        float d0 = (float)BinaryPrimitives.ReadHalfLittleEndian(y), dmin0 = (float)BinaryPrimitives.ReadHalfLittleEndian(y.Slice(2));
        for (int j = 0; j < QK_K / 32; j++)
        {
            ScaleMinK4(j, sc, out byte s, out byte m);
            float d = d0 * s;
            if (d == 0) continue;
            float dm = dmin0 * m;
            for (int ii = 0; ii < 32; ii++)
                L[32 * j + ii] = (byte)Math.Clamp(NearestInt((xb[32 * j + ii] + dm) / d), 0, nmax);
        }
    }

    static void ScaleMinK4(int j, ReadOnlySpan<byte> q, out byte d, out byte m)
    {
        if (j < 4) { d = (byte)(q[j] & 63); m = (byte)(q[j + 4] & 63); }
        else
        {
            d = (byte)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
            m = (byte)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
    }

    /// <summary>make_qkx2_quants: a scale and a (negated) min for n values at levels 0..nmax, searched over nstep+1 candidate scales.</summary>
    static float MakeQkx2Quants(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L, out float theMin,
        Span<byte> laux, float rmin, float rdelta, int nstep)
    {
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            L.Slice(0, n).Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * (x[i] - min));
            L[i] = (byte)Math.Max(0, Math.Min(nmax, l));
            float diff = scale * L[i] + min - x[i];
            diff *= diff;
            bestError += weights[i] * diff;
        }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXl = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * (x[i] - min));
                l = Math.Max(0, Math.Min(nmax, l));
                laux[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXl += w * l * x[i];
            }
            float D = sumW * sumL2 - sumL * sumL;
            if (D > 0)
            {
                float thisScale = (sumW * sumXl - sumX * sumL) / D;
                float thisMin = (sumL2 * sumX - sumL * sumXl) / D;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXl / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * laux[i] + thisMin - x[i];
                    diff *= diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError)
                {
                    laux.Slice(0, n).CopyTo(L);
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    public static void QuantizeQ6_K(ReadOnlySpan<float> x, Span<byte> dst)
    {
        if (x.Length % QK_K != 0) throw new ArgumentException($"q6_K needs a multiple of {QK_K} values, got {x.Length}");
        Span<sbyte> L = stackalloc sbyte[QK_K];
        Span<float> scales = stackalloc float[QK_K / 16];
        for (int i = 0; i < x.Length / QK_K; i++)
        {
            var xb = x.Slice(i * QK_K, QK_K);
            var y = dst.Slice(i * Q6_KBytes, Q6_KBytes);
            y.Clear();
            var ql = y.Slice(0, 128);
            var qh = y.Slice(128, 64);
            var ysc = y.Slice(192, 16);
            var yd = y.Slice(208, 2);
            float maxScale = 0, maxAbsScale = 0;
            for (int ib = 0; ib < QK_K / 16; ib++)
            {
                float scale = MakeQxQuantsRmse1(16, 32, xb.Slice(16 * ib, 16), L.Slice(16 * ib, 16));
                scales[ib] = scale;
                float abs = MathF.Abs(scale);
                if (abs > maxAbsScale) { maxAbsScale = abs; maxScale = scale; }
            }
            if (maxAbsScale < GroupMaxEps) continue; // all zero: the whole block is zero bytes (d = +0)
            float iscale = -128f / maxScale;
            BinaryPrimitives.WriteHalfLittleEndian(yd, (Half)(1 / iscale));
            for (int ib = 0; ib < QK_K / 16; ib++) ysc[ib] = unchecked((byte)(sbyte)Math.Min(127, NearestInt(iscale * scales[ib])));
            float d0 = (float)BinaryPrimitives.ReadHalfLittleEndian(yd);
            for (int j = 0; j < QK_K / 16; j++)
            {
                float d = d0 * (sbyte)ysc[j];
                if (d == 0) continue;
                for (int ii = 0; ii < 16; ii++)
                    L[16 * j + ii] = (sbyte)(Math.Clamp(NearestInt(xb[16 * j + ii] / d), -32, 31) + 32);
            }
            for (int j = 0, lo = 0, ho = 0; j < QK_K; j += 128, lo += 64, ho += 32)
            {
                for (int l = 0; l < 32; l++)
                {
                    int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                    ql[lo + l] = (byte)(q1 | (q3 << 4));
                    ql[lo + l + 32] = (byte)(q2 | (q4 << 4));
                    qh[ho + l] = (byte)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
                }
            }
        }
    }

    /// <summary>make_qx_quants with rmse_type 1 (weights x^2) and no importance weights, as q6_K's reference calls it.</summary>
    static float MakeQxQuantsRmse1(int n, int nmax, ReadOnlySpan<float> x, Span<sbyte> L)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            L.Slice(0, n).Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = NearestInt(iscale * x[i]);
            l = Math.Max(-nmax, Math.Min(nmax - 1, l));
            L[i] = (sbyte)(l + nmax);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0f;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscale * x[i]);
                l = Math.Max(-nmax, Math.Min(nmax - 1, l));
                float w = x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                {
                    int l = NearestInt(iscale * x[i]);
                    L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }
}
